# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The embedded default pipeline's generation figures with their noise floors, under the protocol of
`training/build_default_pipeline.py` (step `evaluate`): 100 samples per class (1,000), image `i` seeded `seed + i`,
guidance 2.0, judged by the digits CNN (`runs/digits_cnn/classifier.pt`), FID in that CNN's features
(`features.pt`) against the 500 real test digits.

- class consistency, and the judge's accuracy on real training and real test digits (the judge is trained on the same
  4,500 training digits as the generator, so it scores a copied training digit as correct);
- memorisation: each sample's pixel distance to its nearest training digit, against the same distance for the 500
  held-out test digits (`glotok_hf.evaluation.memorization`);
- FID, and the real-vs-real floor at the same sample counts: `--floor-draws` class-balanced draws of 1,000 real
  training digits against the 500 test digits (plus all 4,500 training digits against the test digits).

Needs the digits and the judge (offline; a few minutes on a CPU):

    python training/prepare_offline_data.py digits --output data/digits
    python training/train_image_classifier.py --arch cnn --dataset_name data/digits --output_dir runs/digits_cnn \\
        --epochs 15
    python benchmarks/default_pipeline_checks.py [--pipeline pipelines/glotok-digits] [--output checks.json]

Prints JSON (every figure, the sample counts and the seeds).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from glotok_hf import GloTokPipeline
from glotok_hf.data import decode_image, uint8_to_pixels
from glotok_hf.evaluation.consistency import class_consistency, load_image_classifier
from glotok_hf.evaluation.fid import FrechetDistance, load_feature_network
from glotok_hf.evaluation.generation import evaluate_generation
from glotok_hf.evaluation.memorization import memorization_report
from glotok_hf.evaluation.sampling import balanced_class_labels, load_samples_npz

ROOT = Path(__file__).resolve().parents[1]


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `(N, H, W, 3)` and int64 labels of one split of a saved digits dataset."""
    import datasets

    data = datasets.load_from_disk(str(folder))[split].cast_column("image", datasets.Image(decode=False))
    images = np.stack([np.asarray(decode_image(value)) for value in data["image"]])
    return images, np.asarray(data["label"], dtype=np.int64)


def nhwc_to_pixels(images: np.ndarray) -> torch.Tensor:
    return uint8_to_pixels(images).permute(0, 3, 1, 2)


def add_images(fid: FrechetDistance, images: np.ndarray, real: bool, batch_size: int = 250) -> None:
    for start in range(0, len(images), batch_size):
        fid.update(nhwc_to_pixels(images[start : start + batch_size]), real=real)


def fid_floor(fid: FrechetDistance, train: np.ndarray, train_labels: np.ndarray, per_class: int, draws: int) -> dict:
    """Real-vs-real FIDs: `draws` class-balanced draws of `per_class` training digits per class (draw d uses
    `numpy.random.default_rng(d)`) against the reference already in `fid`, and all training digits against it."""
    values = []
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        picked = np.concatenate(
            [rng.choice(np.flatnonzero(train_labels == c), per_class, replace=False) for c in np.unique(train_labels)]
        )
        fid.reset(real=False)
        add_images(fid, train[picked], real=False)
        values.append(fid.compute())
    fid.reset(real=False)
    add_images(fid, train, real=False)
    return {
        "train_images_per_draw": per_class * len(np.unique(train_labels)),
        "draw_seeds": list(range(draws)),
        "fids": values,
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "all_train_images": len(train),
        "all_train_fid": fid.compute(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "glotok-digits")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "digits", help="prepare_offline_data.py output.")
    parser.add_argument("--judge", type=Path, default=ROOT / "runs" / "digits_cnn", help="train_image_classifier.py "
                        "--arch cnn output (classifier.pt, features.pt).")  # fmt: skip
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="Image i is drawn with a generator seeded seed + i.")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--floor-draws", type=int, default=10, help="Draws of real training digits for the FID floor.")
    parser.add_argument("--output", type=Path, help="Also write the JSON here.")
    args = parser.parse_args(argv)
    for path in (args.data, args.judge / "classifier.pt", args.judge / "features.pt", args.pipeline):
        if not path.exists():
            parser.error(f"{path} not found; see the commands at the top of `--help`.")

    train, train_labels = load_split(args.data, "train")
    test, test_labels = load_split(args.data, "test")
    classifier = load_image_classifier(args.judge / "classifier.pt")
    features = load_feature_network(args.judge / "features.pt", probe_size=train.shape[1])
    num_classes = len(np.unique(train_labels))
    pipeline = GloTokPipeline.from_pretrained(args.pipeline)
    pipeline.set_progress_bar_config(disable=True)

    class_labels = balanced_class_labels(num_classes, args.images_per_class)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "samples.npz"
        generation = evaluate_generation(
            pipeline, class_labels, seed=args.seed, batch_size=args.batch_size, feature_network=features,
            reference_batches=(nhwc_to_pixels(test[i : i + 250]) for i in range(0, len(test), 250)),
            classifier=classifier, num_classes=num_classes, npz_path=npz, device="cpu",
            guidance_scale=args.guidance_scale, temperature=1.0, top_k=None, top_p=1.0,
        )  # fmt: skip
        samples, _ = load_samples_npz(npz)

    fid = FrechetDistance(features)
    add_images(fid, test, real=True)
    accuracy = generation["class_consistency"]["accuracy"]
    result = {
        "pipeline": str(args.pipeline),
        "protocol": {
            **generation["sampling"],
            "num_images": generation["num_images"],
            "reference": "test split",
            "num_reference_images": len(test),
            "num_training_images": len(train),
        },
        "class_consistency": accuracy,
        "class_consistency_binomial_se": float(np.sqrt(accuracy * (1 - accuracy) / generation["num_images"])),
        "judge_accuracy_train": class_consistency(classifier, train, train_labels, num_classes)["accuracy"],
        "judge_accuracy_test": class_consistency(classifier, test, test_labels, num_classes)["accuracy"],
        "memorization": memorization_report(samples, test, train),
        "fid": generation["gfid"],
        "fid_real_vs_real": fid_floor(fid, train, train_labels, args.images_per_class, args.floor_draws),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
