# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""Exact conversion checked against the original repositories' own code (not copied: imported from a checkout the
user supplies). For each checkout, a small random c2i GPT (LlamaGen) or FAR (FQGAN) is built with the original
classes and saved as their training scripts save it (`{"model", "optimizer", "steps", "args"}`), converted with
`glotok convert llamagen-gpt|fqgan-far`, and compared with the original: teacher-forced logits (max abs diff, fp32),
and greedy guided sampling, the original `generate(..., cfg_scale=s, top_k=1)` (FQGAN: `generate_fq` with a scale
per codebook) against `GloTokPipeline(vqmodel=<converted VQ of the same repo>, prior=<converted prior>)(...,
guidance_scale=s, top_k=1, output_type="latent")`.

Usage: `PYTHONPATH=src python benchmarks/check_original_parity.py --llamagen-repo PATH --fqgan-repo PATH
[--threads 1]`; prints JSON. Needs no GPU; FQGAN's tokenizer imports einops, stubbed when absent (only its VQ's
forward uses it, which is not run).
"""

import argparse
import contextlib
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

from glotok_hf.cli import main as glotok
from glotok_hf.modeling_glotok import GloTokModel
from glotok_hf.modeling_glotok_prior import GloTokPriorForCausalLM
from glotok_hf.pipeline_glotok import GloTokPipeline

CLASSES, LABELS, VOCAB = 10, [0, 3, 7, 9], 64
# (their cfg_scale, our guidance_scale): LlamaGen does not guide at all with a scale <= 1, we do below 1
SCALES = [(1.0, 1.0), (1.5, 1.5), (4.0, 4.0), (0.5, 1.0), (0.5, 0.5)]
PRIOR = dict(n_layer=3, num_classes=CLASSES, vocab_size=VOCAB)  # LlamaGen's ModelArgs fields
# (grid side, width, heads): head dimensions 64 (GPT-B ... XXL, FAR-B/L) and 100 (GPT-3B)
LLAMAGEN_SIZES, FQGAN_SIZE = [(8, 128, 2), (6, 200, 2)], (16, 128, 2)


def import_original(repo: Path, *names: str) -> list[types.ModuleType]:
    """Import `names` from the checkout `repo`; its top-level packages (`autoregressive`, `tokenizer`, `utils`, the
    same names in both repositories) are dropped from `sys.modules` afterwards, so the other checkout can follow."""
    sys.path.insert(0, str(repo))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(repo))
        for name in [n for n in sys.modules if n.split(".")[0] in ("autoregressive", "tokenizer", "utils")]:
            del sys.modules[name]


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every parameter (the original init zeroes the output heads: every logit would tie): matrices
    with std 1/sqrt(fan-in), so that activations, attention scores and logits are O(1) as in a trained model; norm
    weights 1 + N(0, 0.2^2), biases N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = p.shape[-1] ** -0.5 if p.ndim > 1 else 0.2
            p.copy_(torch.randn(p.shape, generator=g) * std + ("norm" in name))
    return model.eval()


def save_and_convert(work: Path, kind: str, model: torch.nn.Module, *options: str) -> Path:
    """`model` saved as the original training scripts save it, converted with `glotok convert kind`."""
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "steps": 0,
                  "args": argparse.Namespace(gpt_model="small", cls_token_num=1)}  # fmt: skip
    torch.save(checkpoint, work / f"{kind}.pt")
    with contextlib.redirect_stdout(sys.stderr):
        if glotok(["convert", kind, str(work / f"{kind}.pt"), str(work / kind), *options]) != 0:
            raise SystemExit(f"glotok convert {kind} failed")
    return work / kind


def grids_equal(theirs: list[torch.Tensor], ours: list[torch.Tensor]) -> dict[str, int]:
    equal = sum(int((a.flatten(1) == b.flatten(1).to(a.dtype)).sum()) for a, b in zip(theirs, ours, strict=True))
    return {"equal": equal, "unequal": sum(a.numel() for a in theirs) - equal}


def check_llamagen(repo: Path, work: Path, grid: int, dim: int, heads: int) -> dict:
    gpt, generate, vq = import_original(repo, "autoregressive.models.gpt", "autoregressive.models.generate",
                                        "tokenizer.tokenizer_image.vq_model")  # fmt: skip
    model = randomize(
        gpt.Transformer(gpt.ModelArgs(dim=dim, n_head=heads, block_size=grid * grid, **PRIOR)), seed=grid
    )
    vq_model = vq.VQModel(vq.ModelArgs(codebook_size=VOCAB, encoder_ch_mult=[1] * 5, decoder_ch_mult=[1] * 5))
    options = ["--num-attention-heads", str(heads), "--grid-size", str(grid), "--overwrite"]
    prior = GloTokPriorForCausalLM.from_pretrained(save_and_convert(work, "llamagen-gpt", model, *options))
    tokenizer = GloTokModel.from_pretrained(
        save_and_convert(work, "llamagen-vq", vq_model, "--sample-size", str(16 * grid), "--overwrite")
    )
    pipe = GloTokPipeline(vqmodel=tokenizer, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.tensor(LABELS)
    codes = torch.randint(VOCAB, (len(LABELS), grid * grid), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # their "naive inference" path: no KV cache yet, the whole sequence at once
        theirs, _ = model(codes[:, :-1], labels, input_pos=torch.arange(grid * grid))
        ours = prior(input_ids=codes, class_labels=labels).logits[0]
    report = {"grid": grid, "width": dim, "heads": heads, "teacher_forced_max_abs_diff": float((theirs - ours).abs().max()),
              "max_abs_logit": float(theirs.abs().max())}  # fmt: skip
    for their_scale, our_scale in SCALES:
        sample = generate.generate(model, labels, grid * grid, cfg_scale=their_scale, top_k=1)
        out = pipe(class_labels=LABELS, guidance_scale=our_scale, top_k=1, output_type="latent")
        report[f"greedy_their_{their_scale}_our_{our_scale}"] = grids_equal([sample], [out.visual_indices])
    return report


def check_fqgan(repo: Path, work: Path) -> dict:
    if importlib.util.find_spec("einops") is None:  # imported by the dual VQ's module, used only in its forward
        sys.modules["einops"] = types.ModuleType("einops")
        sys.modules["einops"].rearrange = None
    far, generate, vq = import_original(repo, "autoregressive.models.far_dual", "autoregressive.models.generate_dual",
                                        "tokenizer.vq_model_dual")  # fmt: skip
    grid, dim, heads = FQGAN_SIZE  # the dual VQ's adapters are fixed to 256 px at 16x downsampling: a 16x16 grid
    with contextlib.redirect_stdout(sys.stderr):
        model = randomize(
            far.Transformer(far.ModelArgs(dim=dim, n_head=heads, block_size=grid * grid, ar_n_layer=2, **PRIOR)),
            seed=2,
        )
        vq_model = vq.VQModel(vq.ModelArgs(codebook_size=VOCAB, encoder_ch_mult=[1, 1, 1, 1, 4],
                                           decoder_ch_mult=[1, 1, 1, 1, 4]))  # fmt: skip
    prior = GloTokPriorForCausalLM.from_pretrained(
        save_and_convert(work, "fqgan-far", model, "--num-attention-heads", str(heads), "--overwrite")
    )
    tokenizer = GloTokModel.from_pretrained(save_and_convert(work, "fqgan-dual", vq_model, "--overwrite"))
    pipe = GloTokPipeline(vqmodel=tokenizer, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    labels = torch.tensor(LABELS)
    codes = torch.randint(VOCAB, (len(LABELS), grid * grid, 2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = model(codes[..., 0], codes[..., 1], labels, input_pos=torch.arange(grid * grid))[:2]
        ours = prior(input_ids=codes, class_labels=labels).logits
    diff = max(float((a - b).abs().max()) for a, b in zip(theirs, ours, strict=True))
    report = {"grid": grid, "width": dim, "heads": heads, "ar_n_layer": 2, "teacher_forced_max_abs_diff": diff}
    report["max_abs_logit"] = max(float(t.abs().max()) for t in theirs)
    # generate_fq guides both sub-tokens or neither (cfg_scale[0] sizes the batch): both scales > 1, or both < 1
    per_book = [([s, s], [s, s]) for s in (1.5, 4.0)] + [([1.5, 4.0],) * 2, ([4.0, 1.5],) * 2]
    for their_scales, our_scales in per_book + [([0.5, 0.5], [1.0, 1.0]), ([0.5, 0.5],) * 2, ([1.0, 1.0],) * 2]:
        key = f"greedy_their_{'/'.join(map(str, their_scales))}_our_{'/'.join(map(str, our_scales))}"
        try:
            sample = generate.generate_fq(model, labels, grid * grid, cfg_scale=their_scales, temperature=[1.0, 1.0],
                                          top_k=[1, 1], top_p=[1.0, 1.0])  # fmt: skip
        except RuntimeError as err:  # cfg_scale[0] == 1: its KV cache has 2B rows (`>= 1.0`), its batch B
            report[key] = {"their_error": str(err)}
            continue
        out = pipe(class_labels=LABELS, guidance_scale=our_scales, top_k=1, output_type="latent")
        report[key] = grids_equal(list(sample), [out.visual_indices, out.semantic_indices])
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llamagen-repo", type=Path, help="a checkout of FoundationVision/LlamaGen")
    parser.add_argument("--fqgan-repo", type=Path, help="a checkout of showlab/FQGAN")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.llamagen_repo is None and args.fqgan_repo is None:
        parser.error("give --llamagen-repo and/or --fqgan-repo")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {"torch": torch.__version__, "threads": args.threads, "classes": LABELS, "vocab": VOCAB,
              "prior": PRIOR}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        for name, repo in (("llamagen", args.llamagen_repo), ("fqgan", args.fqgan_repo)):
            if repo is None:
                continue
            git = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
            report[name] = {"commit": git.stdout.strip() or None}
            if name == "llamagen":
                report[name]["cases"] = [check_llamagen(repo, Path(work), *size) for size in LLAMAGEN_SIZES]
            else:
                report[name] |= check_fqgan(repo, Path(work))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
