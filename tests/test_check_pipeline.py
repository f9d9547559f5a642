"""`glotok check-pipeline`: the offline pre-push check of a pipeline folder."""

import json

import pytest
from pipeline_utils import tiny_pipeline

from glotok_hf.cli import main
from glotok_hf.commands.check_pipeline import lint_card, local_paths_in_json
from glotok_hf.hub import model_card, save_remote_code_pipeline

CARD = dict(training_data="3 classes of tiny test images", metrics={"FID": 1.5})


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def by_name(checks):
    return {check.name: check for check in checks}


@pytest.mark.slow  # a child process importing torch + diffusers: ~8 s of CPU
def test_a_hub_layout_folder_with_a_full_card_passes_and_generates_the_same_image(pipe, tmp_path, capsys):
    save_remote_code_pipeline(pipe, tmp_path, sample_grid=None, card_kwargs=CARD)
    assert main(["check-pipeline", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "same image as glotok-hf" in out and "FAIL" not in out and out.rstrip().endswith("0 failed")


def test_lint_names_what_the_card_lacks(tmp_path):
    model_card("pipeline").save(tmp_path / "README.md")  # no training data, no metrics
    checks = by_name(lint_card(tmp_path))
    assert checks["card: license"].ok
    assert not checks["card: training data"].ok and not checks["card: metrics"].ok
    model_card("pipeline", sample_grid_file="grid.png", **CARD).save(tmp_path / "README.md")
    checks = by_name(lint_card(tmp_path))
    assert checks["card: training data"].ok and checks["card: metrics"].ok
    assert not checks["card: images"].ok and "grid.png" in checks["card: images"].detail
    assert not by_name(lint_card(tmp_path / "missing"))["model card"].ok


def test_absolute_local_paths_in_json_files_are_reported(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_name_or_path": str(tmp_path), "name": "x"}))
    (tmp_path / "sub" / "config.json").write_text(json.dumps({"_name_or_path": "user/repo"}))
    assert local_paths_in_json(tmp_path) == ["model_index.json: _name_or_path"]


@pytest.mark.slow  # a child process importing torch + diffusers: ~8 s of CPU
def test_a_plain_save_is_checked_in_the_layout_push_to_hub_uploads(pipe, tmp_path, capsys):
    pipe.save_pretrained(tmp_path)  # diffusers' own layout: records glotok_hf.* modules
    model_card("pipeline", **CARD).save(tmp_path / "README.md")
    assert main(["check-pipeline", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "PASS  remote-code layout" in out
        and "a plain save_pretrained: checked in the layout push_to_hub uploads" in out
    )
    assert "same image as glotok-hf" in out and "card: training data" in out and out.rstrip().endswith("0 failed")
    # The folder itself is left as it was.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "model_index.json", "prior", "vqmodel"]


def test_saves_write_no_local_absolute_path(pipe, tmp_path):
    from glotok_hf.loading import load_pipeline

    pipe.save_pretrained(tmp_path / "plain")
    loaded = load_pipeline(tmp_path / "plain", device="cpu")
    loaded.save_pretrained(tmp_path / "resaved")
    save_remote_code_pipeline(loaded, tmp_path / "hub", sample_grid=None)
    for name in ("plain", "resaved", "hub"):
        assert local_paths_in_json(tmp_path / name) == [], name


def test_not_a_pipeline_folder_is_a_clear_cli_error(tmp_path, capsys):
    assert main(["check-pipeline", str(tmp_path)]) == 2
    assert "no model_index.json" in capsys.readouterr().err
