#!/usr/bin/env python
"""Build a small real-image dataset that is available offline, as a `datasets` folder for `--dataset_name`.

    python training/prepare_offline_data.py digits --output data/digits   # 5,000 real handwritten digits, 10 classes

`digits` reads OpenCV's `digits.png` (5,000 handwritten digits of 20x20 pixels, 500 per class; BSD-3-Clause, from
Debian's `opencv-doc` package). The file is taken from an installed `opencv-doc`, from a `.deb` fetched with
`apt-get download opencv-doc` (package registries are reachable offline here), or from `--digits-png`. With
`--source sklearn` it uses scikit-learn's 1,797 8x8 digits instead (UCI, CC BY 4.0), upscaled.

The dataset is saved with `DatasetDict.save_to_disk` (splits `train` and `test`; columns `image`, `label` with
`ClassLabel` names), which `glotok_hf.data.load_image_dataset(dataset_name=<folder>)` and the training script read.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
OPENCV_DIGITS = "usr/share/doc/opencv-doc/examples/data/digits.png"


def find_opencv_digits(explicit: str | None) -> Path:
    """Locate OpenCV's digits.png: an explicit path, an installed opencv-doc, or a downloaded .deb."""
    if explicit:
        return Path(explicit)
    installed = Path("/") / OPENCV_DIGITS
    if installed.is_file():
        return installed
    cache = Path(tempfile.gettempdir()) / "glotok-opencv-doc"
    extracted = cache / OPENCV_DIGITS
    if extracted.is_file():
        return extracted
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FileNotFoundError("digits.png not found and apt-get/dpkg-deb are unavailable; pass --digits-png or "
                                "use --source sklearn.")  # fmt: skip
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "opencv-doc"], cwd=cache, check=True, capture_output=True)
    deb = next(cache.glob("opencv-doc_*.deb"))
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", f"./{OPENCV_DIGITS}"], input=tar, cwd=cache, check=True)
    deb.unlink()
    return extracted


def opencv_digits(path: Path, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut digits.png (50 rows x 100 columns of 20x20 cells; rows 5k..5k+4 hold digit k) into images and labels."""
    sheet = np.asarray(Image.open(path).convert("L"))
    if sheet.shape != (1000, 2000):
        raise ValueError(f"{path} is {sheet.shape[1]}x{sheet.shape[0]}, expected OpenCV's 2000x1000 digits.png.")
    cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10), 500)
    return np.pad(cells, ((0, 0), (pad, pad), (pad, pad))), labels


def sklearn_digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0 * 255).astype(np.uint8)
    images = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in images]
    )
    return images, bunch.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:test_per_class] for c in np.unique(labels)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), np.sort(test)


def to_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im) for im in images], "label": labels.tolist()}, features=features
    )


def build_digits(args) -> datasets.DatasetDict:
    if args.source == "opencv":
        images, labels = opencv_digits(find_opencv_digits(args.digits_png), pad=args.pad)
    else:
        images, labels = sklearn_digits(size=20 + 2 * args.pad)
    splits = zip(("train", "test"), stratified_split(labels, args.test_per_class, args.seed))
    return datasets.DatasetDict({name: to_dataset(images[i], labels[i], DIGIT_NAMES) for name, i in splits})


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["digits"])
    parser.add_argument("--output", required=True, help="Folder to write (must not exist, or use --overwrite).")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", choices=["opencv", "sklearn"], default="opencv", help="digits: which digits.")
    parser.add_argument("--digits-png", default=None, help="digits: path to OpenCV's digits.png.")
    parser.add_argument("--pad", type=int, default=2, help="digits: black border added to the 20x20 cells.")
    parser.add_argument("--test-per-class", type=int, default=50, help="digits: held-out images per class.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        print(f"error: {output} exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    dataset = build_digits(args)
    if output.exists():
        shutil.rmtree(output)
    dataset.save_to_disk(str(output))
    print({split: len(d) for split, d in dataset.items()}, "->", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
