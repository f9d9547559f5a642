# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok eval reconstruction|generation`: the evaluation protocol as a command; JSON to stdout and `--output`.

Every network comes from a local path (nothing is downloaded). Run it on several processes with
`accelerate launch -m glotok_hf.cli eval ...`: each process takes a shard and the metrics are combined.
"""

import argparse
import json
from pathlib import Path

from ..utils import atomic_write, resolve_source
from . import add_dataset_arguments, check_output, positive_int

SAMPLING_OPTIONS = ("guidance_scale", "temperature", "top_k", "top_p", "cache_implementation")  # pipeline arguments
EPILOG = """examples:
  # PSNR, SSIM, codebook usage/perplexity, LPIPS, rFID with the TorchScript Inception, uniformity of the semantic branch
  glotok eval reconstruction --model ./glotok-tokenizer --train-data-dir ./imagenet/val --resolution 256 \\
      --lpips lpips_vgg16.safetensors --inception inception-2015-12-05.pt --uniformity-images 10000 \\
      --output recon.json

  # 50 balanced samples per class, ADM-style npz, gFID/IS against an ADM reference batch, class consistency
  accelerate launch -m glotok_hf.cli eval generation --pipeline ./glotok-pipeline --num-classes 1000 \\
      --images-per-class 50 --guidance-scale 2.0 --seed 0 --npz samples.npz \\
      --inception inception-2015-12-05.pt --reference VIRTUAL_imagenet256_labeled.npz \\
      --classifier ./vit-imagenet --output gen.json

feature networks: --inception takes the TorchScript inception-2015-12-05.pt (StyleGAN2-ADA / clean-fid; no extra
package) or torch-fidelity's weights-inception-2015-12-05-6726825d.pth (needs `pip install torch-fidelity`);
--feature-net takes any TorchScript network mapping float images in [0, 1] (B, 3, H, W) to (B, F) features.
"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("feature networks and output")
    networks = group.add_mutually_exclusive_group()
    networks.add_argument("--inception", help="Inception-v3 file for FID/IS (see below).")
    networks.add_argument("--feature-net", help="TorchScript feature network for FID (images in [0, 1] -> (B, F)).")
    group.add_argument(
        "--batch-size", type=positive_int, help="Images per batch (default 32; generation on a GPU: 256)."
    )
    group.add_argument("--seed", type=int, default=0, help="Seed (default 0).")
    group.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="Tokenizer autocast.")
    group.add_argument("--no-quantize", action="store_true", help="Score float outputs instead of 8-bit images.")
    group.add_argument("--output", help="Also write the JSON report to this file.")
    group.add_argument("--overwrite", action="store_true", help="Allow replacing existing output files.")
    group.add_argument("--progress", action="store_true", help="Show progress bars.")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Evaluate a tokenizer (reconstruction) or a pipeline (generation); prints JSON.",
        description="Evaluate a GloTok tokenizer (PSNR, SSIM, LPIPS, rFID, codebook usage and perplexity, latent "
        "uniformity) or a GloTok pipeline (balanced per-image-seeded samples, gFID, IS, class consistency, ADM-style "
        ".npz export). Prints a JSON report.",
        epilog=EPILOG,
    )
    modes = parser.add_subparsers(dest="mode", metavar="<mode>")

    recon = modes.add_parser(
        "reconstruction",
        help="Tokenize and detokenize a dataset and score the reconstructions.",
        description="Tokenize and detokenize every image of a dataset and report PSNR, SSIM, LPIPS (with --lpips), "
        "rFID (with --inception or --feature-net), codebook usage and perplexity per codebook, and optionally the "
        "uniformity of a branch's latent space (GloTok Table 3).",
        epilog=EPILOG,
    )
    recon.add_argument("--model", required=True, help="Tokenizer folder (GloTokModel.save_pretrained).")
    recon.add_argument("--subfolder", default="", help="Subfolder of --model, e.g. 'vqmodel' of a pipeline folder.")
    data = recon.add_argument_group("data")
    add_dataset_arguments(data)
    data.add_argument("--resolution", type=positive_int, help="Resize + center crop side (default: sample_size).")
    data.add_argument("--max-samples", type=positive_int, help="Evaluate only the first N images.")
    data.add_argument("--num-workers", type=int, default=0, help="Dataloader workers (default 0).")
    recon.add_argument("--lpips", help="LPIPS weights (.safetensors made by `glotok convert-lpips`).")
    uni = recon.add_argument_group("uniformity (VA-VAE protocol)")
    uni.add_argument("--uniformity-images", type=int, default=0, help="Images whose latents are kept (0 = off).")
    uni.add_argument("--uniformity-points", type=positive_int, default=10_000, help="t-SNE points per repeat (10000).")
    uni.add_argument("--uniformity-repeats", type=positive_int, default=10, help="Repeats, as mean/std (default 10).")
    uni.add_argument("--uniformity-branch", choices=["semantic", "visual"], default="semantic")
    uni.add_argument("--uniformity-no-flip", action="store_true", help="Do not draw from flipped images.")
    uni.add_argument("--uniformity-max-iter", type=int, default=1000, help="t-SNE iterations (default 1000).")
    uni.add_argument("--uniformity-perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30).")
    _add_common(recon)
    recon.set_defaults(func=run_reconstruction)

    gen = modes.add_parser(
        "generation",
        help="Sample a pipeline with a fixed protocol and score the samples.",
        description="Sample images_per_class images of every class with per-image seeds (seed + i, independent of "
        "the number of processes), write them losslessly (ADM-style .npz, PNGs), and report gFID and IS (with "
        "--inception or --feature-net and --reference) and class consistency (with --classifier).",
        epilog=EPILOG,
    )
    gen.add_argument("--pipeline", required=True, help="Pipeline folder (GloTokPipeline.save_pretrained).")
    labels = gen.add_mutually_exclusive_group(required=True)
    labels.add_argument("--num-classes", type=positive_int, help="Sample classes 0..N-1.")
    labels.add_argument("--class-labels", type=int, nargs="+", help="Sample these class ids.")
    gen.add_argument("--images-per-class", type=positive_int, default=50, help="Images per class (default 50).")
    gen.add_argument("--guidance-scale", type=float, default=2.0, help="CFG scale (default 2.0).")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="Pipeline dtype.")
    gen.add_argument("--cache-implementation", choices=["dynamic", "static"], default="dynamic", help="KV cache.")
    gen.add_argument("--npz", help="Write the samples to this ADM-style .npz (arr_0 uint8 NHWC, arr_1 labels).")
    gen.add_argument("--png-dir", help="Also write every sample as a PNG into this folder.")
    gen.add_argument(
        "--reference",
        help="gFID reference: an .npz with mu/sigma (ADM reference batch), an ADM image batch (.npz with arr_0), "
        "an image folder or a saved dataset.",
    )
    gen.add_argument("--reference-image-column", default="image")
    gen.add_argument("--reference-split", default="train")
    gen.add_argument("--is-splits", type=positive_int, default=10, help="Inception Score splits (default 10).")
    gen.add_argument("--classifier", help="Classifier: a transformers image-classification folder or TorchScript.")
    _add_common(gen)
    gen.set_defaults(func=run_generation)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)  # no mode: the help, exit code 2


# ----------------------------------------------------------------------------------------------------- helpers
def _json_safe(value):
    """JSON without NaN/Infinity: non-finite floats become the strings "inf", "-inf", "nan"."""
    names = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
    return json.loads(json.dumps(value), parse_constant=names.__getitem__)


def _report(result: dict, output: Path | None, is_main: bool) -> int:
    text = json.dumps(_json_safe(result), indent=2, allow_nan=False)
    if is_main:
        print(text)
    if is_main and output is not None:
        atomic_write(output, lambda tmp: tmp.write_text(text + "\n"))
    return 0


def _feature_networks(args, probe_size: int, want_logits: bool):
    """(feature network for FID, logits network for IS, description) from --inception / --feature-net."""
    from glotok_hf.evaluation.fid import load_feature_network, load_inception

    if args.inception:
        pool = load_inception(args.inception, output="pool")
        logits = load_inception(args.inception, output="logits", pool=pool) if want_logits else None
        return pool, logits, f"inception: {Path(args.inception).name}"
    if args.feature_net:
        return load_feature_network(args.feature_net, probe_size), None, f"feature-net: {Path(args.feature_net).name}"
    return None, None, None


def _image_loader(dataset, resolution: int, batch_size: int, num_workers: int, image_column: str, max_samples=None):
    """This process's contiguous shard of `dataset` as batches of `pixel_values` in [-1, 1]."""
    import torch

    from glotok_hf.data import ImageDataset, ImageTransform, collate_images
    from glotok_hf.evaluation.sampling import process_state, shard_indices

    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    state = process_state()
    images = ImageDataset(dataset, ImageTransform(resolution, center_crop=True), image_column, label_column=None)
    shard = torch.utils.data.Subset(images, list(shard_indices(len(images), state.num_processes, state.process_index)))
    loader = torch.utils.data.DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_images
    )
    return loader, len(dataset)


def _local_folder(source: str, what: str) -> Path:
    """`source` as an existing local folder (evaluation downloads nothing)."""
    path = resolve_source(source, what)  # a mistyped path: "No such file or folder for --model: ..."
    if not isinstance(path, Path) or not path.is_dir():
        raise FileNotFoundError(f"{what} {source} is not a local folder (evaluation downloads nothing).")
    return path


# --------------------------------------------------------------------------------------------- reconstruction
def run_reconstruction(args) -> int:
    output = check_output(args.output, args.overwrite)
    if args.uniformity_images < 0:
        raise ValueError(f"--uniformity-images must be >= 0, got {args.uniformity_images}.")
    model_path = _local_folder(args.model, "--model")  # before torch is imported: a typo fails at once
    import torch

    from glotok_hf.data import load_image_dataset
    from glotok_hf.evaluation.reconstruction import evaluate_reconstruction
    from glotok_hf.evaluation.sampling import process_state
    from glotok_hf.loading import load_tokenizer
    from glotok_hf.losses.lpips import LPIPS

    state = process_state()
    torch.manual_seed(args.seed)
    model = load_tokenizer(model_path, subfolder=args.subfolder, device=state.device)
    resolution = args.resolution or model.config.sample_size
    dataset = load_image_dataset(
        args.dataset_name, args.dataset_config_name, args.train_data_dir, args.split, args.image_column, None
    )
    args.batch_size = args.batch_size or 32
    loader, num_images = _image_loader(
        dataset, resolution, args.batch_size, args.num_workers, args.image_column, args.max_samples
    )
    lpips = LPIPS.from_pretrained(args.lpips) if args.lpips else None
    feature_network, _, features = _feature_networks(args, resolution, want_logits=False)
    result = evaluate_reconstruction(
        model,
        loader,
        lpips=lpips,
        feature_network=feature_network,
        quantize=not args.no_quantize,
        autocast_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision),
        uniformity_images=args.uniformity_images,
        uniformity_branch=args.uniformity_branch,
        uniformity_flip=not args.uniformity_no_flip,
        uniformity_kwargs={
            "num_points": args.uniformity_points,
            "num_repeats": args.uniformity_repeats,
            "seed": args.seed,
            "perplexity": args.uniformity_perplexity,
            "max_iter": args.uniformity_max_iter,
        },
        progress=args.progress and state.is_local_main_process,
    )
    result = {
        "mode": "reconstruction",
        "model": str(model_path / args.subfolder),  # Path / "" is the path itself
        "dataset": str(args.train_data_dir or args.dataset_name),
        "split": args.split,
        "resolution": resolution,
        "num_dataset_images": num_images,
        "quantized_8bit": not args.no_quantize,
        "feature_network": features,
        "lpips_weights": Path(args.lpips).name if args.lpips else None,
        "num_processes": state.num_processes,
        **result,
    }
    return _report(result, output, state.is_main_process)


# ------------------------------------------------------------------------------------------------- generation
def _reference(args, resolution: int):
    """(reference statistics or None, reference batches or None) from --reference."""
    import numpy as np

    from glotok_hf.data import is_saved_dataset, load_image_dataset
    from glotok_hf.evaluation.fid import load_reference_statistics
    from glotok_hf.evaluation.sampling import load_samples_npz, process_state, shard_indices, uint8_to_pixel_values

    path = Path(args.reference)
    if path.suffix == ".npz":  # np.load names a missing file
        with np.load(path, allow_pickle=False) as data:
            if {"mu", "sigma"} <= set(data.keys()):
                return load_reference_statistics(path), None
        images, _ = load_samples_npz(path)
        state = process_state()
        mine = shard_indices(len(images), state.num_processes, state.process_index)
        batches = (
            uint8_to_pixel_values(images[i : min(i + args.batch_size, mine.stop)])
            for i in range(mine.start, mine.stop, args.batch_size)
        )
        return None, batches
    # a saved dataset or an image folder (load_image_dataset names a missing one)
    name, folder = (str(path), None) if is_saved_dataset(path) else (None, path)
    dataset = load_image_dataset(name, None, folder, args.reference_split, args.reference_image_column, None)
    loader, _ = _image_loader(dataset, resolution, args.batch_size, 0, args.reference_image_column)
    return None, loader


def run_generation(args) -> int:
    output = check_output(args.output, args.overwrite)  # --npz is checked by sample_for_evaluation before sampling
    pipeline_path = _local_folder(args.pipeline, "--pipeline")  # before torch is imported: a typo fails at once
    import torch

    from glotok_hf.evaluation.consistency import load_image_classifier
    from glotok_hf.evaluation.generation import evaluate_generation
    from glotok_hf.evaluation.sampling import balanced_class_labels, process_state
    from glotok_hf.loading import load_pipeline

    state = process_state()
    pipeline = load_pipeline(pipeline_path, device=state.device, dtype=getattr(torch, args.dtype))
    pipeline.set_progress_bar_config(disable=True)
    args.batch_size = args.batch_size or (256 if state.device.type == "cuda" else 32)
    resolution = pipeline.vqmodel.config.sample_size
    class_ids = args.num_classes if args.num_classes is not None else args.class_labels
    class_labels = balanced_class_labels(class_ids, args.images_per_class)
    feature_network, logits_network, features = _feature_networks(args, resolution, want_logits=True)
    reference_statistics = reference_batches = None
    if args.reference:
        if feature_network is None:
            raise ValueError("--reference needs --inception or --feature-net to compute gFID.")
        reference_statistics, reference_batches = _reference(args, resolution)
    elif feature_network is not None and logits_network is None:
        raise ValueError("--feature-net computes gFID, which needs --reference.")
    classifier = load_image_classifier(args.classifier, device=state.device) if args.classifier else None
    num_classes = getattr(classifier, "num_classes", None)
    if num_classes is None and pipeline.layout is not None:
        num_classes = pipeline.layout.num_classes
    result = evaluate_generation(
        pipeline,
        class_labels,
        seed=args.seed,
        batch_size=args.batch_size,
        feature_network=feature_network if args.reference else None,
        reference_statistics=reference_statistics,
        reference_batches=reference_batches,
        logits_network=logits_network,
        inception_score_splits=args.is_splits,
        classifier=classifier,
        num_classes=num_classes,
        npz_path=args.npz,
        png_dir=args.png_dir,
        overwrite=args.overwrite,
        progress=args.progress,
        **{name: getattr(args, name) for name in SAMPLING_OPTIONS},
    )
    result = {
        "mode": "generation",
        "pipeline": str(args.pipeline),
        "resolution": resolution,
        "feature_network": features,
        "reference": Path(args.reference).name if args.reference else None,
        "classifier": Path(args.classifier).name if args.classifier else None,
        "npz": str(args.npz) if args.npz else None,
        "dtype": args.dtype,
        **result,
    }
    return _report(result, output, state.is_main_process)
