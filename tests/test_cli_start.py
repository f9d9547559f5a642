"""Start-up: `import glotok_hf` is light but still registers the model classes with transformers' Auto classes, in
either import order, so `AutoModel.from_pretrained(folder)` and the `glotok` commands never reach transformers'
interactive trust-remote-code prompt (stdin is closed here: a prompt would fail)."""

import json
import subprocess

import pytest
from conftest import PYTHON, dummy_images, tiny_glotok_model

from glotok_hf.data import tensor_to_pil


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_glotok_model().save_pretrained(folder)
    assert "AutoModel" in json.loads((folder / "config.json").read_text())["auto_map"]  # remote code is offered
    return folder


def run(args, env, **kwargs):
    return subprocess.run(
        args, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300, **kwargs
    )


@pytest.mark.slow  # four fresh processes importing torch + transformers
@pytest.mark.parametrize(
    "imports",
    [
        "import glotok_hf\nfrom transformers import AutoModel",
        "from transformers import AutoModel\nimport glotok_hf",
        "from glotok_hf.configuration_glotok import GloTokConfig\nfrom transformers import AutoModel",
        "from glotok_hf.modeling_glotok import GloTokModel\nfrom transformers import AutoModel",
    ],
    ids=["glotok-first", "transformers-first", "config-module", "model-module"],
)
def test_import_glotok_hf_registers_the_auto_classes_in_any_order(imports, tokenizer_dir, subprocess_env):
    code = f"{imports}\nmodel = AutoModel.from_pretrained({str(tokenizer_dir)!r})\nprint(type(model).__module__)"
    proc = run([PYTHON, "-c", code], subprocess_env)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "glotok_hf.modeling_glotok", proc.stderr


def test_glotok_on_a_folder_with_auto_map_never_prompts(tokenizer_dir, subprocess_env, tmp_path):
    image = tmp_path / "digit.png"
    tensor_to_pil(dummy_images(1))[0].save(image)
    argv = ["reconstruct", image, "--model", tokenizer_dir, "--output", tmp_path / "r.png"]
    proc = run([PYTHON, "-m", "glotok_hf.cli", *map(str, argv)], subprocess_env)
    assert proc.returncode == 0 and "custom code" not in proc.stdout + proc.stderr, proc.stderr


def test_without_the_import_transformers_would_prompt(tokenizer_dir, subprocess_env):
    """The control: the same folder without `import glotok_hf` reaches the prompt, which fails with stdin closed."""
    code = f"from transformers import AutoModel\nAutoModel.from_pretrained({str(tokenizer_dir)!r})"
    proc = run([PYTHON, "-c", code], subprocess_env)
    assert proc.returncode != 0 and "trust_remote_code=True" in proc.stderr
