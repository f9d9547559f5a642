"""Time the tokenizer objective's parts (forward + backward, median of repeats) and print one JSON object.

    PYTHONPATH=src python benchmarks/bench_losses.py [--device cuda --dtype bfloat16 --size 256 --batch 8]

Measures: LPIPS (random VGG16 weights: the cost does not depend on the values), the default PatchGAN discriminator,
the adaptive GAN weight (two extra autograd.grad calls through the decoder's last layer), and the whole
`GloTokObjective.generator_loss` on a small tokenizer relative to the tokenizer's own forward + backward.
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

from glotok_hf import GloTokConfig, GloTokModel
from glotok_hf.discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
from glotok_hf.losses import LPIPS, GloTokLossConfig, GloTokObjective, histogram_bin_centers


def timed(fn, device: torch.device, repeats: int) -> dict[str, float]:
    """Median wall time and, on CPU, median process CPU time (less sensitive to other load on a shared machine)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    result = {"wall_s": round(statistics.median(wall), 4)}
    if device.type == "cpu":
        result["cpu_s"] = round(statistics.median(cpu), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1
    results = {}

    lpips = LPIPS().to(device)
    recon = images.clone().requires_grad_(True)

    def lpips_step():
        with autocast:
            lpips(recon, images).mean().backward()

    results["lpips_fwd_bwd"] = timed(lpips_step, device, args.repeats)

    discriminator = GloTokDiscriminator(GloTokDiscriminatorConfig()).to(device)

    def discriminator_step():
        with autocast:
            discriminator(recon).mean().backward()

    results["discriminator_fwd_bwd"] = timed(discriminator_step, device, args.repeats)

    model = GloTokModel(
        GloTokConfig(block_out_channels=(32, 64, 64), norm_num_groups=8, latent_channels=32, adapter_depth=2,
                     semantic_codebook_size=1024, visual_codebook_size=1024, residual_hidden_size=64,
                     residual_num_heads=4, sample_size=args.size)
    ).to(device).train()  # fmt: skip
    teacher = torch.softmax(-((histogram_bin_centers(40) - 0.1) ** 2) * 20, 0)

    def step(objective: GloTokObjective | None):
        def run():
            with autocast:
                output = model(images)
                if objective is None:
                    loss = output.sample.float().pow(2).mean() + output.codebook_loss + output.commitment_loss
                else:
                    loss = objective.generator_loss(
                        output, images, global_step=1, discriminator=discriminator,
                        semantic_codebook=model.semantic.quantizer.embedding.weight,
                        visual_codebook=model.visual.quantizer.embedding.weight, last_layer=model.get_last_layer(),
                    )["loss"]  # fmt: skip
            loss.backward()

        return run

    results["tokenizer_fwd_bwd"] = timed(step(None), device, args.repeats)
    for name, overrides in {
        "objective_default": {},
        "objective_adaptive_weight": {"disc_adaptive_weight": True},
        "objective_no_lpips": {"perceptual_weight": 0.0},
    }.items():
        config = GloTokLossConfig(disc_start=0, **overrides)
        objective = GloTokObjective(
            config, teacher_histogram=teacher, perceptual=lpips if config.perceptual_weight else None
        )
        results[f"tokenizer_plus_{name}_fwd_bwd"] = timed(step(objective.to(device)), device, args.repeats)

    print(json.dumps({
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "device": str(device), "dtype": args.dtype, "batch": args.batch, "size": args.size, "repeats": args.repeats,
        "load_average_1min": round(os.getloadavg()[0], 2), **results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
