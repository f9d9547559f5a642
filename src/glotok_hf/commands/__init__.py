"""Subcommands of the `glotok` console script, one per module, which `glotok_hf.cli` discovers: each defines
`register(subparsers)`, adding its parser (a description, examples in the epilog, `set_defaults(func=run)` where
`run(args) -> int | None`). The argument helpers they share live here and import no torch, so `--help` and argument
errors answer at once.
"""

import argparse
import inspect
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that keeps the line breaks of descriptions and epilogs (the examples)."""

    def __init__(self, *args, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def image_path(text: str) -> Path:
    from PIL import Image

    path = Path(text).expanduser()
    if path.suffix.lower() not in Image.registered_extensions():
        raise argparse.ArgumentTypeError(f"{text!r} needs an image file extension such as .png")
    return path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="float32",
                        help="weights dtype (default: float32)")  # fmt: skip


def add_dataset_arguments(group, required: bool = False) -> None:
    """The image dataset options of the commands that read images: its source (exactly one) and what to read."""
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument("--train-data-dir", help="An image folder (imagefolder layout, one sub-folder per class).")
    source.add_argument("--dataset-name", help="A folder written by Dataset.save_to_disk, or a (cached) Hub dataset.")
    group.add_argument("--dataset-config-name", help="The dataset configuration.")
    group.add_argument("--split", default="train", help="Split (default: %(default)s).")
    group.add_argument("--image-column", default="image", help="Image column (default: %(default)s).")


def check_output(path: str | Path | None, overwrite: bool) -> Path | None:
    """`path` as a `Path`, refused at once (before any work) when it exists without `--overwrite`."""
    if path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
    return None if path is None else Path(path)


def options_for(function, args: argparse.Namespace, **overrides) -> dict:
    """The options of `args`, updated with `overrides`, that are named like a parameter of `function` (the flags are
    named after the library's arguments)."""
    parameters = inspect.signature(function).parameters
    return {name: value for name, value in (vars(args) | overrides).items() if name in parameters}
