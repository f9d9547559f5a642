"""The "Your own image folder" walk-through of training/README.md at tiny size: a folder of coloured shapes, an offline
backbone teacher (train_image_classifier.py on a folder without a test split + `glotok build-teacher`), the tokenizer
stage at a resolution other than the recipe's, `glotok extract-codes` with its defaults, the prior stage, and the
pipeline it writes: consistent grids everywhere, a card that passes `glotok check-pipeline`'s lint, and every
mismatch on the way stopped with a message that says what to change."""

import json
import random

import pytest
import torch
from PIL import Image, ImageDraw
from train_utils import TRAINING_DIR, load_script, run_in_process

from glotok_hf import GloTokModel, GloTokPipeline
from glotok_hf.cli import main as glotok
from glotok_hf.commands.check_pipeline import lint_card

RECIPES = TRAINING_DIR / "recipes"
SHORT = ["--max_train_steps", "2", "--train_batch_size", "8", "--checkpointing_steps", "2", "--validation_steps", "2",
         "--num_validation_images", "3", "--report_to", "none"]  # fmt: skip


def make_shapes(root, per_class: int = 12, size: int = 40, seed: int = 0):
    """An image folder of coloured circles, squares and triangles on coloured backgrounds."""
    rng = random.Random(seed)
    for shape in ("circle", "square", "triangle"):
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
            draw, color = ImageDraw.Draw(image), tuple(rng.randrange(256) for _ in range(3))
            r = rng.randint(size // 5, size // 3)
            x, y = rng.randint(r, size - r), rng.randint(r, size - r)
            if shape == "circle":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
            elif shape == "square":
                draw.rectangle([x - r, y - r, x + r, y + r], fill=color)
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=color)
            image.save(root / shape / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The README's commands, in order (few steps each)."""
    root = tmp_path_factory.mktemp("own_images")
    runs = {name: root / name for name in ("shapes", "vit", "tokenizer", "codes", "prior")}
    make_shapes(runs["shapes"])
    classifier = load_script(TRAINING_DIR / "train_image_classifier.py")
    vit = ["--arch", "vit", "--train_data_dir", str(runs["shapes"]), "--resolution", "32", "--width", "32", "--depth",
           "1", "--epochs", "1", "--output_dir", str(runs["vit"])]  # fmt: skip
    assert classifier.main(vit) == 0
    teacher = root / "teacher.safetensors"
    teacher_args = ["build-teacher", "--source", "backbone", "--model", str(runs["vit"]), "--train-data-dir",
                    str(runs["shapes"]), "--num-clusters", "8", "--output", str(teacher), "--no-progress"]  # fmt: skip
    assert glotok(teacher_args) == 0
    run_in_process(["--config", str(RECIPES / "tiny_cpu.json"), "--train_data_dir", str(runs["shapes"]),
                    "--output_dir", str(runs["tokenizer"]), "--resolution", "32", "--teacher_histogram", str(teacher),
                    "--histogram_weight", "0.01", *SHORT])  # fmt: skip
    assert glotok(["extract-codes", "--tokenizer", str(runs["tokenizer"]), "--train-data-dir", str(runs["shapes"]),
                   "--output-dir", str(runs["codes"]), "--num-workers", "0", "--no-progress"]) == 0  # fmt: skip
    run_in_process(["--config", str(RECIPES / "tiny_prior_cpu.json"), "--codes_dir", str(runs["codes"]),
                    "--tokenizer_name_or_path", str(runs["tokenizer"]), "--output_dir", str(runs["prior"]),
                    *SHORT])  # fmt: skip
    return {**runs, "teacher": teacher}


def test_the_walk_through_gives_a_pipeline_on_the_grid_it_was_trained_at(walk):
    assert json.loads((walk["vit"] / "metrics.json").read_text())["test_split"].startswith("0.1 of train")
    tokenizer = GloTokModel.from_pretrained(walk["tokenizer"])
    assert tokenizer.config.sample_size == 32 and tokenizer.config.latent_grid_size == 8  # not the recipe's 24 / 6
    assert json.loads((walk["tokenizer"] / "training_args.json").read_text())["resolution"] == 32
    codes = json.loads((walk["codes"] / "glotok_codes.json").read_text())
    assert (codes["resolution"], codes["grid"], codes["num_images"]) == (32, [8, 8], 36)
    prior = json.loads((walk["prior"] / "config.json").read_text())  # the saved prior records its grid
    assert prior["image_grid_size"] == [8, 8] and prior["max_position_embeddings"] == 1 + 64 * 2
    pipeline = GloTokPipeline.from_pretrained(walk["prior"] / "pipeline")
    assert pipeline.prior.config.image_grid_size == [8, 8]
    out = pipeline(["triangle"], generator=[torch.Generator().manual_seed(0)], output_type="pt")
    assert out.images.shape == (1, 3, 32, 32) and out.visual_indices.shape == (1, 8, 8)
    assert [check.name for check in lint_card(walk["prior"] / "pipeline") if not check.ok] == []
    card = (walk["prior"] / "pipeline" / "README.md").read_text()
    assert "36 images, 3 classes: circle, square, triangle" in card and "prior/loss" in card
    assert "the image folder `shapes`: 36 images, 3 classes" in (walk["tokenizer"] / "README.md").read_text()


def test_a_mismatch_on_the_way_stops_with_what_to_change(walk, tmp_path):
    prior = ["--config", str(RECIPES / "tiny_prior_cpu.json"), "--output_dir", str(tmp_path / "p"), *SHORT]
    codes24 = tmp_path / "codes24"  # codes extracted at another resolution than the tokenizer's
    extract = ["extract-codes", "--tokenizer", str(walk["tokenizer"]), "--train-data-dir", str(walk["shapes"]),
               "--output-dir", str(codes24), "--resolution", "24", "--num-workers", "0", "--no-progress"]  # fmt: skip
    assert glotok(extract) == 0
    with pytest.raises(ValueError, match=r"6x6 token grid \(extracted at 24 px\), but the tokenizer's sample_size 32 "
                       r"gives 8x8: extract them again without --resolution"):  # fmt: skip
        run_in_process([*prior, "--codes_dir", str(codes24), "--tokenizer_name_or_path", str(walk["tokenizer"])])
    raw = walk["tokenizer"] / "checkpoint-2" / "tokenizer"  # same config, other weights than the published EMA
    stale = [*prior, "--codes_dir", str(walk["codes"]), "--tokenizer_name_or_path", str(raw)]
    with pytest.raises(ValueError, match="other tokenizer weights .* pass --allow_tokenizer_mismatch"):
        run_in_process(stale)
    with pytest.raises(ValueError, match="--resolution 24 differs from the tokenizer's sample_size 32"):
        run_in_process([*prior, "--train_data_dir", str(walk["shapes"]), "--tokenizer_name_or_path",
                        str(walk["tokenizer"]), "--resolution", "24"])  # fmt: skip
    with pytest.raises(ValueError, match="--resolution 24 differs from the sample_size 32 of"):
        run_in_process(["--config", str(RECIPES / "tiny_cpu.json"), "--train_data_dir", str(walk["shapes"]),
                        "--output_dir", str(tmp_path / "t"), "--pretrained_model_name_or_path", str(walk["tokenizer"]),
                        "--resolution", "24", *SHORT])  # fmt: skip
    run = run_in_process([*stale, "--allow_tokenizer_mismatch", "--output_dir", str(tmp_path / "anyway"),
                          "--max_train_steps", "1", "--num_validation_images", "0"])  # fmt: skip
    assert run.state.global_step == 1


def test_the_training_readme_lists_every_recipe_and_walks_through_an_image_folder():
    readme = (TRAINING_DIR / "README.md").read_text()
    table = readme.split("## Recipes")[1].split("###")[0]
    assert [p.name for p in sorted(RECIPES.iterdir()) if f"| `{p.name}` |" not in table] == []
    walk_through = readme.split("## Your own image folder")[1].split("\n## ")[0]
    for command in ("train_image_classifier.py --arch vit --train_data_dir", "build-teacher --source backbone",
                    "tiny_cpu.json --train_data_dir data/shapes --resolution 32", "glotok extract-codes",
                    "tiny_prior_cpu.json --codes_dir", "glotok generate --pipeline", "save_remote_code_pipeline",
                    "glotok check-pipeline"):  # fmt: skip
        assert command in walk_through
