"""The Gradio demo (`glotok demo`, the Space) used as a person would: the app served on 127.0.0.1 by a child process,
driven in headless Chromium (Debian's chromium + chromium-driver through selenium, nothing downloaded). Generate
gives the pixels of `GloTokPipeline` with the same seeds, Tokenize shows the PSNR of `glotok reconstruct`, bad input
reads as a message in the page, and the page asks nothing of the internet. Also `hub.push_space` on the fake Hub.

Set GLOTOK_SPACE_SCREENSHOTS=docs/images to (re)write the README's screenshots from these tests."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi  # noqa: F401  (imported before the fake Hub's environment is set; see fakehub.py)
from PIL import Image
from pipeline_utils import single_thread  # noqa: F401
from space_utils import (
    CHROMEDRIVER,
    CHROMIUM,
    ROOT,
    chromium,
    click,
    click_text,
    gallery_images,
    open_app,
    open_tab,
    requested_urls,
    screenshot,
    serve,
    set_classes,
    set_number,
    upload,
    wait,
    wait_text,
)

from glotok_hf.cli import main
from glotok_hf.hub import push_space, space_files
from glotok_hf.loading import embedded_pipeline_path, load_pipeline

SCREENSHOTS = os.environ.get("GLOTOK_SPACE_SCREENSHOTS")
pytestmark = pytest.mark.usefixtures("single_thread")
LOCAL = ("http://127.0.0.1:", "data:", "blob:")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, driver) of `glotok demo` (embedded default pipeline) open in headless Chromium."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    assert not missing, f"{missing} missing: `apt-get install chromium chromium-driver` (.ci/run installs them)"
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with serve(log) as (url, _), chromium() as driver:
        open_app(driver, url)
        yield url, driver
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()


def test_generate_in_the_browser_gives_the_pipelines_pixels(app, pipe):
    url, driver = app
    set_classes(driver, ["seven", "2"])  # a name and an id
    set_number(driver, "count", 2)
    set_number(driver, "seed", 5)
    click(driver, "#generate")
    shown = gallery_images(driver, 4)
    wait_text(driver, r"7 seven, seed 5")
    wait_text(driver, r"2 two, seed 8")
    if SCREENSHOTS:
        screenshot(driver, Path(SCREENSHOTS) / "space_generate.png")

    generators = [torch.Generator().manual_seed(5 + i) for i in range(4)]
    expected = pipe(["seven", 2], num_images_per_label=2, generator=generators).images
    size = pipe.vqmodel.config.sample_size
    for image, reference in zip(shown, expected):
        factor = image.width // size
        assert factor >= 4 and image.height == image.width * 3 // 2  # upscaled, the two code maps below
        sample = np.asarray(image)[: size * factor : factor, ::factor]  # nearest-neighbour: every pixel a square
        assert np.asarray(image)[: size * factor].std() > 10  # not blank
        np.testing.assert_array_equal(sample, np.asarray(reference))


def test_tokenize_in_the_browser_shows_the_psnr_of_glotok_reconstruct(app, pipe, tmp_path, capsys):
    url, driver = app
    digit = pipe([3], generator=torch.Generator().manual_seed(0)).images[0]
    path = tmp_path / "digit.png"
    digit.convert("L").resize((56, 56), Image.Resampling.BICUBIC).save(path)  # another mode and size
    open_tab(driver, "Tokenize")
    upload(driver, "upload", path)
    click(driver, "#tokenize")
    shown = wait_text(driver, r"PSNR (\d+\.\d+) dB · semantic codes: (\d+) distinct of 64 · visual codes: (\d+)")
    if SCREENSHOTS:
        screenshot(driver, Path(SCREENSHOTS) / "space_tokenize.png")

    assert main(["reconstruct", str(path), "--output", str(tmp_path / "recon.png")]) == 0
    printed = re.search(r"PSNR (\d+\.\d+) dB", capsys.readouterr().out)
    assert shown.group(1) == printed.group(1)
    grid = pipe.vqmodel.config.latent_grid_size
    assert all(1 <= int(n) <= grid * grid for n in shown.groups()[1:])

    click_text(driver, "1_one.png")  # an example: a sample of class 1 made at start-up
    click(driver, "#tokenize")
    wait(driver, lambda d: shown.group(0) not in d.find_element("tag name", "body").text, 30, "a new PSNR")
    wait_text(driver, r"PSNR \d+\.\d+ dB")


def test_bad_inputs_show_a_message_not_a_traceback(app, tmp_path):
    url, driver = app
    open_tab(driver, "Generate")
    set_classes(driver, ["sevn"])
    click(driver, "#generate")
    wait_text(driver, r"Unknown class label 'sevn': did you mean 'seven'\?")
    set_classes(driver, ["seven"])
    set_number(driver, "count", 10000)
    click(driver, "#generate")
    wait_text(driver, r"1 classes x 10000 images asked for: this demo makes 1 to 64 images per click\.")
    open_tab(driver, "Tokenize")
    (tmp_path / "notes.png").write_text("not an image")
    upload(driver, "upload", tmp_path / "notes.png")
    click(driver, "#tokenize")
    wait_text(driver, r"Upload an image file \(PNG, JPEG, \.\.\.\): this one cannot be read as an image\.")
    assert "Traceback" not in driver.find_element("tag name", "body").text
    open_tab(driver, "Generate")  # the app still serves
    set_number(driver, "count", 1)
    click(driver, "#generate")
    assert len(gallery_images(driver, 1)) == 1


def test_the_page_asks_nothing_of_the_internet(app):
    url, driver = app
    driver.get(url)
    open_tab(driver, "Tokenize")
    urls = requested_urls(driver)
    assert any(u.startswith(url) for u in urls)
    assert [u for u in urls if not u.startswith(LOCAL)] == []


def test_push_space_writes_the_space_layout(fake_hub, tmp_path):
    url = push_space("tester/glotok-demo")
    assert "tester/glotok-demo" in url and fake_hub.repo_ids("space") == ["tester/glotok-demo"]
    files = fake_hub.files("tester/glotok-demo", repo_type="space")
    embedded = sorted(
        str(p.relative_to(embedded_pipeline_path())) for p in embedded_pipeline_path().rglob("*") if p.is_file()
    )
    assert sorted(files) == sorted([".gitattributes", "README.md", "app.py", "glotok_space.json", "requirements.txt",
                                    *(f"pipeline/{p}" for p in embedded)])  # fmt: skip
    for name in ("app.py", "README.md", "requirements.txt"):  # the checkout's spaces/glotok is this layout
        assert files[name].decode() == (ROOT / "spaces" / "glotok" / name).read_text() == space_files()[name]
    assert json.loads(files["glotok_space.json"]) == {"pipeline": "pipeline", "trust_remote_code": False}
    import gradio

    assert "sdk: gradio\n" in files["README.md"].decode()
    assert f"sdk_version: {gradio.__version__}\n" in files["README.md"].decode()
    assert fake_hub.token_leaks() == []

    git = "glotok-hf @ git+https://github.com/someone/glotok-hf@v0.1.0"  # a version that is not on PyPI
    assert main(["push-space", "tester/other", "--pipeline", "someone/glotok-imagenet", "--trust-remote-code",
                 "--tokenizer", str(embedded_pipeline_path() / "vqmodel"), "--requirement", git]) == 0  # fmt: skip
    files = fake_hub.files("tester/other", repo_type="space")
    assert files["requirements.txt"].decode().splitlines()[-1] == git
    assert "glotok-hf==" not in files["requirements.txt"].decode()
    settings = json.loads(files["glotok_space.json"])
    assert settings == {"pipeline": "someone/glotok-imagenet", "tokenizer": "tokenizer", "trust_remote_code": True}
    assert (
        "tokenizer/model.safetensors" in files and "pipeline `someone/glotok-imagenet`" in files["README.md"].decode()
    )


def test_demo_command_help_and_bad_paths(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--pipeline" in capsys.readouterr().out
    assert main(["demo", "--pipeline", str(tmp_path / "missing")]) == 2
    assert "No such file or folder for --pipeline" in capsys.readouterr().err


def test_tokenize_tab_takes_another_tokenizer_and_errors_are_gradio_messages(tmp_path):
    """`glotok demo --tokenizer FOLDER`, in process: the handlers behind the buttons, without a browser."""
    import gradio as gr
    from conftest import tiny_glotok_model

    from glotok_hf.demo import build_demo

    tiny_glotok_model(visual_codebook_size=0).save_pretrained(tmp_path / "tokenizer")  # semantic codebook only
    demo = build_demo(tokenizer=str(tmp_path / "tokenizer"))
    generate, tokenize = (next(f.fn for f in demo.fns.values() if f.name == name) for name in ("generate", "tokenize"))
    Image.new("RGBA", (40, 30), (200, 10, 10, 128)).save(tmp_path / "wide.png")
    views, maps, stats = tokenize(str(tmp_path / "wide.png"))
    assert re.fullmatch(r"PSNR -?\d+\.\d+ dB · semantic codes: \d+ distinct of 12", stats)
    assert views.size == (3 * 16 * 12, 16 * 12) and maps.size == (16 * 12, 16 * 12)  # 16-pixel images, upscaled x12
    with pytest.raises(gr.Error, match="1 classes x 10000 images asked for"):
        generate(["3"], 10000, 2.0, 1.0, 0, 0)
    with pytest.raises(gr.Error, match="Class id 12 is out of range"):
        generate(["12"], 1, 2.0, 1.0, 0, 0)
    with pytest.raises(gr.Error, match="top_k"):
        generate(["3"], 1, 2.0, 1.0, -5, 0)
