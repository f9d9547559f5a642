"""`glotok eval reconstruction|generation` end to end on a tiny tokenizer, a tiny pipeline and generated data."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import tiny_glotok_model
from eval_utils import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    ColourClassifier,
    FakeTorchScriptInception,
    UnitColourClassifier,
    one_torch_thread,
    tiny_feature_net,
    tiny_pipeline,
    write_image_folder,
)
from safetensors.torch import save_file

from glotok_hf.cli import main
from glotok_hf.data import ImageDataset, ImageTransform, load_image_dataset
from glotok_hf.evaluation.consistency import class_consistency
from glotok_hf.evaluation.fid import FrechetDistance, save_statistics
from glotok_hf.evaluation.reconstruction import evaluate_reconstruction
from glotok_hf.evaluation.sampling import load_samples_npz, save_samples_npz


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    tiny_glotok_model().save_pretrained(root / "tokenizer")
    tiny_pipeline(num_classes=3).save_pretrained(root / "pipeline")
    write_image_folder(root / "images", num_images=6, size=16)
    write_image_folder(root / "reference", num_images=6, size=8, seed=1)
    torch.jit.save(torch.jit.script(tiny_feature_net()), root / "features.pt")
    torch.jit.save(torch.jit.script(UnitColourClassifier()), root / "classifier.pt")
    torch.jit.save(torch.jit.script(FakeTorchScriptInception().eval()), root / "inception-2015-12-05.pt")
    return root


def test_reconstruction_end_to_end(files, tmp_path, capsys):
    from glotok_hf.losses.lpips import LPIPS

    torch.manual_seed(0)
    weights = {k: v.abs() if k.startswith("heads.") else v for k, v in LPIPS().state_dict().items()}  # heads >= 0
    save_file(weights, tmp_path / "lpips_vgg16.safetensors")
    output = tmp_path / "report.json"
    argv = [
        "reconstruction", "--model", files / "tokenizer", "--train-data-dir", files / "images", "--batch-size", 4,
        "--feature-net", files / "features.pt", "--lpips", tmp_path / "lpips_vgg16.safetensors",
        "--uniformity-images", 6, "--uniformity-points", 6, "--uniformity-repeats", 1, "--uniformity-perplexity", 1.5,
        "--uniformity-max-iter", 250, "--output", output,
    ]  # fmt: skip
    code, report, _ = run_cli(capsys, *argv)
    assert code == 0 and json.loads(output.read_text()) == report
    assert report["num_images"] == report["num_dataset_images"] == 6 and report["resolution"] == 16
    assert report["feature_network"] == "feature-net: features.pt" and report["lpips"] >= 0
    assert set(report["codebooks"]) == {"semantic", "visual"} and report["uniformity"]["num_points"] == 6
    # the same figures as the Python API on the same data
    dataset = ImageDataset(load_image_dataset(train_data_dir=files / "images", label_column=None), ImageTransform(16),
                           label_column=None)  # fmt: skip
    images = torch.stack([dataset[i]["pixel_values"] for i in range(6)])
    expected = evaluate_reconstruction(
        tiny_glotok_model(), [images[:4], images[4:]], feature_network=tiny_feature_net()
    )
    for key in ("psnr", "ssim", "rfid"):
        assert report[key] == pytest.approx(expected[key], rel=1e-5)
    for name, stats in expected["codebooks"].items():
        assert report["codebooks"][name] == pytest.approx(stats)

    code, _, err = run_cli(capsys, *argv)  # never overwrites without --overwrite
    assert code == 2 and "exists" in err and "--overwrite" in err
    code, _, _ = run_cli(capsys, *argv[:11], "--max-samples", 2, "--output", output, "--overwrite")
    assert code == 0 and json.loads(output.read_text())["num_images"] == 2


def test_generation_end_to_end(files, tmp_path, capsys):
    npz = tmp_path / "samples.npz"
    code, report, _ = run_cli(
        capsys, "generation", "--pipeline", files / "pipeline", "--num-classes", 3, "--images-per-class", 2,
        "--batch-size", 4, "--seed", 3, "--guidance-scale", 1.5, "--npz", npz, "--png-dir", tmp_path / "png",
        "--feature-net", files / "features.pt", "--reference", files / "reference", "--classifier",
        files / "classifier.pt",
    )  # fmt: skip
    assert code == 0
    images, labels = load_samples_npz(npz)
    assert images.shape == (6, 8, 8, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(list((tmp_path / "png").glob("*.png"))) == 6
    assert report["sampling"]["seed"] == 3 and report["sampling"]["guidance_scale"] == 1.5
    assert report["gfid_reference"] == "images" and report["reference"] == "reference"
    # gFID and consistency agree with the API on the stored samples
    reference = ImageDataset(load_image_dataset(train_data_dir=files / "reference", label_column=None),
                             ImageTransform(8), label_column=None)  # fmt: skip
    fid = FrechetDistance(tiny_feature_net())
    fid.update(torch.stack([reference[i]["pixel_values"] for i in range(6)]), real=True)
    fid.update(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, real=False)
    assert report["gfid"] == pytest.approx(fid.compute(), rel=1e-5)
    expected = class_consistency(ColourClassifier(), images, labels, num_classes=3)
    assert report["class_consistency"]["accuracy"] == pytest.approx(expected["accuracy"])

    # reference statistics from an .npz with mu/sigma give the same gFID
    mu, sigma, _ = fid.statistics(real=True)
    save_statistics(tmp_path / "ref_stats.npz", mu, sigma)
    code, stats_report, _ = run_cli(
        capsys, "generation", "--pipeline", files / "pipeline", "--num-classes", 3, "--images-per-class", 2,
        "--seed", 3, "--guidance-scale", 1.5, "--feature-net", files / "features.pt", "--reference",
        tmp_path / "ref_stats.npz",
    )  # fmt: skip
    assert code == 0 and stats_report["gfid_reference"] == "statistics"
    assert stats_report["gfid"] == pytest.approx(report["gfid"], rel=1e-4)

    # an ADM-style image batch (arr_0) as the reference gives the same gFID as the folder it was made from
    batch = np.stack(
        [((reference[i]["pixel_values"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy() for i in range(6)]
    )
    save_samples_npz(tmp_path / "ref_images.npz", batch)
    code, batch_report, _ = run_cli(
        capsys, "generation", "--pipeline", files / "pipeline", "--num-classes", 3, "--images-per-class", 2,
        "--seed", 3, "--guidance-scale", 1.5, "--feature-net", files / "features.pt", "--reference",
        tmp_path / "ref_images.npz",
    )  # fmt: skip
    assert code == 0 and batch_report["gfid_reference"] == "images"
    assert batch_report["gfid"] == pytest.approx(report["gfid"], rel=1e-4)


def test_generation_inception_score_with_the_torchscript_inception(files, capsys):
    code, report, _ = run_cli(
        capsys, "generation", "--pipeline", files / "pipeline", "--class-labels", 0, 2, "--images-per-class", 2,
        "--inception", files / "inception-2015-12-05.pt", "--is-splits", 1,
    )  # fmt: skip
    assert code == 0 and report["feature_network"] == "inception: inception-2015-12-05.pt"
    assert 1.0 <= report["inception_score"] <= 4 and report["num_images"] == 4 and "gfid" not in report


def test_user_errors_are_reported_without_traceback(files, tmp_path, capsys):
    base = ["generation", "--pipeline", files / "pipeline", "--num-classes", 3, "--images-per-class", 1]
    code, _, err = run_cli(capsys, *base, "--feature-net", files / "features.pt")
    assert code == 2 and "needs --reference" in err
    code, _, err = run_cli(capsys, *base, "--reference", files / "reference")
    assert code == 2 and "--inception or --feature-net" in err
    if importlib.util.find_spec("torch_fidelity") is None:  # a missing optional package is a clean error too
        torch.save({"w": torch.zeros(1)}, tmp_path / "weights-inception-2015-12-05-6726825d.pth")
        code, _, err = run_cli(capsys, *base, "--inception", tmp_path / "weights-inception-2015-12-05-6726825d.pth")
        assert code == 2 and "pip install torch-fidelity" in err
    code, _, err = run_cli(capsys, "generation", "--pipeline", tmp_path, "--num-classes", 3)
    assert code == 2 and "model_index.json" in err
    code, _, err = run_cli(capsys, "reconstruction", "--model", tmp_path / "nope", "--train-data-dir", files)
    assert code == 2 and "No such file or folder for --model" in err


def test_help_lists_both_modes_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "reconstruction" in out and "generation" in out and "examples:" in out
    assert main(["eval"]) == 2  # no mode: help, exit code 2


def test_reports_are_strict_json():
    from glotok_hf.commands.eval import _json_safe

    assert json.loads(json.dumps(_json_safe({"psnr": float("inf"), "x": [float("nan"), 1.0]}), allow_nan=False)) == {
        "psnr": "inf",
        "x": ["nan", 1.0],
    }
