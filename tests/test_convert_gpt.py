"""`glotok convert llamagen-gpt|fqgan-far`: LlamaGen c2i GPT and FQGAN FAR state dicts (public key names and shapes, random values, built
here) converted into GloTokPriorForCausalLM, checked against a literal reference forward written from the published
architecture (fused qkv, interleaved rotary pairs, 2-D RoPE with a zero rotation for the class token, SwiGLU
w2(silu(w1 x) * w3 x), RMSNorm, the FAR head over [backbone state, visual embedding])."""

import argparse
import pathlib

import pytest
import torch
import torch.nn.functional as F
from prior_utils import one_torch_thread

from glotok_hf.cli import main
from glotok_hf.configuration_glotok_prior import PRIOR_PRESETS
from glotok_hf.convert_gpt import convert_checkpoint, convert_state_dict
from glotok_hf.modeling_glotok_prior import GloTokPriorForCausalLM
from glotok_hf.sampling import TokenLayout, sample_image_tokens

WIDTH, HEADS, KV_HEADS, FFN, CLASSES, GRID = 32, 4, 2, 64, 5, 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def public_state_dict(far: bool, layers: int = 2, head_layers: int = 1, vocab: int = 20, seed: int = 0) -> dict:
    """Random tensors under LlamaGen's (or, with `far`, FQGAN FAR's) parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) * 0.3  # noqa: E731
    head_dim = WIDTH // HEADS
    sd = {"cls_embedding.embedding_table.weight": rand(CLASSES + 1, WIDTH), "norm.weight": 1 + rand(WIDTH)}
    if far:
        sd |= {"tok_embeddings_1.weight": rand(vocab, WIDTH), "tok_embeddings_2.weight": rand(vocab, WIDTH),
               "aggregation_layer.weight": rand(WIDTH, 2 * WIDTH), "aggregation_layer.bias": rand(WIDTH),
               "output_1.weight": rand(vocab, WIDTH), "output_2.weight": rand(vocab, WIDTH)}  # fmt: skip
    else:
        sd |= {"tok_embeddings.weight": rand(vocab, WIDTH), "output.weight": rand(vocab, WIDTH)}
    for prefix, count in (("layers", layers), ("ar_head", head_layers if far else 0)):
        for i in range(count):
            sd |= {f"{prefix}.{i}.attention.wqkv.weight": rand((HEADS + 2 * KV_HEADS) * head_dim, WIDTH),
                   f"{prefix}.{i}.attention.wo.weight": rand(WIDTH, WIDTH),
                   f"{prefix}.{i}.feed_forward.w1.weight": rand(FFN, WIDTH),
                   f"{prefix}.{i}.feed_forward.w3.weight": rand(FFN, WIDTH),
                   f"{prefix}.{i}.feed_forward.w2.weight": rand(WIDTH, FFN),
                   f"{prefix}.{i}.attention_norm.weight": 1 + rand(WIDTH),
                   f"{prefix}.{i}.ffn_norm.weight": 1 + rand(WIDTH)}  # fmt: skip
    return sd


# ----------------------------------------------------------------------------- literal reference (from the paper)
def rotations(head_dim: int) -> torch.Tensor:
    """Complex rotation per sequence position (class token first, then the grid in raster order) and pair: the class
    token's is 0; pair k < head_dim/4 turns with the row at 10000 ** (-4k / head_dim), the next quarter with the
    column."""
    quarter = head_dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter).float() * 2 / (head_dim // 2))
    rows = [torch.cat([r * freqs, c * freqs]) for r in range(GRID) for c in range(GRID)]
    angles = torch.stack(rows)
    return torch.cat([torch.zeros(1, head_dim // 2, dtype=torch.cfloat), torch.polar(torch.ones_like(angles), angles)])


def rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:  # x: (B, L, H, D), pairs (2i, 2i+1)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * rot[None, : x.shape[1], None]).flatten(-2)


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def block(sd, prefix, x, rot):
    b, length, _ = x.shape
    head_dim = WIDTH // HEADS
    q, k, v = F.linear(rms(x, sd[f"{prefix}.attention_norm.weight"]), sd[f"{prefix}.attention.wqkv.weight"]).split(
        [WIDTH, KV_HEADS * head_dim, KV_HEADS * head_dim], -1
    )
    q = rope(q.view(b, length, HEADS, head_dim), rot).transpose(1, 2)
    k = rope(k.view(b, length, KV_HEADS, head_dim), rot).transpose(1, 2).repeat_interleave(HEADS // KV_HEADS, 1)
    v = v.view(b, length, KV_HEADS, head_dim).transpose(1, 2).repeat_interleave(HEADS // KV_HEADS, 1)
    scores = (q @ k.transpose(-1, -2)) / head_dim**0.5
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, WIDTH)
    h = x + F.linear(attn, sd[f"{prefix}.attention.wo.weight"])
    y = rms(h, sd[f"{prefix}.ffn_norm.weight"])
    w1, w2, w3 = (sd[f"{prefix}.feed_forward.{n}.weight"] for n in ("w1", "w2", "w3"))
    return h + F.linear(F.silu(F.linear(y, w1)) * F.linear(y, w3), w2)


def reference_logits(sd, labels, codes) -> list[torch.Tensor]:
    """Teacher-forced logits `(B, N, V)` per codebook; `codes` `(B, N)` (GPT) or `(B, N, 2)` (FAR)."""
    far = codes.ndim == 3
    rot = rotations(WIDTH // HEADS)
    cls = sd["cls_embedding.embedding_table.weight"][labels][:, None]
    if far:
        e1, e2 = sd["tok_embeddings_1.weight"][codes[..., 0]], sd["tok_embeddings_2.weight"][codes[..., 1]]
        tokens = F.linear(torch.cat([e1, e2], -1), sd["aggregation_layer.weight"], sd["aggregation_layer.bias"])
    else:
        tokens = sd["tok_embeddings.weight"][codes]
    x = torch.cat([cls, tokens[:, :-1]], 1)
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("layers.")})):
        x = block(sd, f"layers.{i}", x, rot)
    if not far:
        return [F.linear(rms(x, sd["norm.weight"]), sd["output.weight"])]
    b, n, _ = x.shape
    ctx = torch.stack([x, e1], 2).reshape(b * n, 2, WIDTH)
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("ar_head.")})):
        ctx = block(sd, f"ar_head.{i}", ctx, rot)
    ctx = rms(ctx.reshape(b, n, 2, WIDTH), sd["norm.weight"])
    return [F.linear(ctx[:, :, 0], sd["output_1.weight"]), F.linear(ctx[:, :, 1], sd["output_2.weight"])]


def reference_greedy(sd, labels, scale: float, far: bool) -> torch.Tensor:
    """Greedy (top-k 1) guided generation with full uncached forwards, in the layout's token ids."""
    labels = torch.tensor(labels)
    null = torch.full_like(labels, CLASSES)
    codes = torch.zeros(len(labels), GRID * GRID, *((2,) if far else ()), dtype=torch.long)
    for p in range(GRID * GRID):
        for j in range(2 if far else 1):
            cond, uncond = (reference_logits(sd, lab, codes[:, : p + 1])[j][:, p] for lab in (labels, null))
            best = (uncond + scale * (cond - uncond)).argmax(-1)
            if far:
                codes[:, p, j] = best
            else:
                codes[:, p] = best
    if far:
        return torch.stack([codes[..., 0], codes[..., 1] + 20], -1).flatten(1)
    return codes


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("far", [False, True])
def test_teacher_forced_logits_match_the_reference(far):
    sd = public_state_dict(far)
    model = convert_state_dict(sd, HEADS, GRID)
    assert model.config.codebook_sizes == ([20, 20] if far else [20]) and model.config.num_classes == CLASSES
    assert model.config.num_key_value_heads == KV_HEADS and model.config.head_layers == (1 if far else 0)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 20, (2, GRID * GRID, 2) if far else (2, GRID * GRID), generator=g)
    labels = torch.tensor([1, CLASSES])
    with torch.no_grad():
        ours = model(codes, labels).logits
    for a, b in zip(ours, reference_logits(sd, labels, codes)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("far", [False, True])
def test_greedy_guided_samples_match_the_reference(far):
    sd = public_state_dict(far, seed=3)
    model = convert_state_dict(sd, HEADS, GRID)
    layout = TokenLayout(20, 20 if far else 0, CLASSES)
    tokens = sample_image_tokens(model, layout, [0, 3], GRID * GRID, guidance_scale=1.75, top_k=1)
    torch.testing.assert_close(tokens, reference_greedy(sd, [0, 3], 1.75, far), rtol=0, atol=0)


def test_cli_writes_an_atomic_folder_and_refuses_to_overwrite(tmp_path, capsys):
    sd = public_state_dict(far=False)
    checkpoint = tmp_path / "c2i.pt"
    torch.save({"model": sd, "steps": 10, "args": argparse.Namespace(gpt_model="GPT-tiny")}, checkpoint)
    out = tmp_path / "prior"
    assert main(["convert", "llamagen-gpt", str(checkpoint), str(out), "--num-attention-heads", "4",
                 "--grid-size", str(GRID)]) == 0  # fmt: skip
    loaded = GloTokPriorForCausalLM.from_pretrained(out).eval()
    codes = torch.randint(0, 20, (1, GRID * GRID))
    expected = reference_logits(sd, torch.tensor([2]), codes)[0]
    torch.testing.assert_close(loaded(codes, torch.tensor([2])).logits[0], expected, atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2i.pt", "prior"]  # no partial folder left
    assert main(["convert", "llamagen-gpt", str(checkpoint), str(out), "--num-attention-heads", "4"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "llamagen-gpt", str(checkpoint), str(out), "--num-attention-heads", "4",
                 "--overwrite"]) == 0  # fmt: skip
    assert main(["convert", "llamagen-gpt", str(checkpoint), str(tmp_path / "other")]) == 2  # heads unknown
    assert "exactly one of --preset or --num-attention-heads" in capsys.readouterr().err


def test_bad_checkpoints_and_options_are_refused(tmp_path, monkeypatch):
    sd = public_state_dict(far=False)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": sd, "path": pathlib.PurePosixPath("x")}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_checkpoint("llamagen-gpt", unsafe, tmp_path / "a", num_attention_heads=HEADS)
    good = tmp_path / "good.pt"
    torch.save(sd, good)
    with pytest.raises(ValueError, match="12 attention heads do not divide its width 32"):
        convert_checkpoint("llamagen-gpt", good, tmp_path / "b", preset="GPT-B")
    monkeypatch.setitem(PRIOR_PRESETS, "GPT-T", (3, WIDTH, HEADS, 0, 0))
    with pytest.raises(ValueError, match="2 layers of width 32, not the GPT-T preset's 3"):
        convert_checkpoint("llamagen-gpt", good, tmp_path / "b", preset="GPT-T")
    with pytest.raises(ValueError, match="not fqgan-far"):
        convert_checkpoint("fqgan-far", good, tmp_path / "c", num_attention_heads=HEADS)
    with pytest.raises(ValueError, match="exactly one"):
        convert_checkpoint("llamagen-gpt", good, tmp_path / "d")
    with pytest.raises(ValueError, match="unknown keys \\['extra.weight'\\]"):
        convert_state_dict({**sd, "extra.weight": torch.zeros(1)}, HEADS, GRID)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


def test_public_llamagen_checkpoints_to_generated_images(tmp_path, capsys):
    """The README's path from LlamaGen's two checkpoints to images: convert the VQ and the GPT, assemble and save a
    `GloTokPipeline`, `glotok generate` from the folder; its greedy tokens are the reference's."""
    from test_convert import KWARGS, random_state, save_training_checkpoint, source_shapes
    from transformers import AutoModel, AutoModelForCausalLM

    from glotok_hf import GloTokPipeline
    from glotok_hf.convert import convert_checkpoint as convert_tokenizer

    vq = save_training_checkpoint(tmp_path / "vq_ds2.pt", random_state(source_shapes("llamagen-vq", codes=20)))
    convert_tokenizer("llamagen-vq", vq, tmp_path / "vq", sample_size=2 * GRID, **KWARGS)  # a 3x3 token grid
    sd = public_state_dict(far=False, seed=3)
    torch.save({"model": sd, "args": argparse.Namespace(gpt_model="GPT-tiny")}, tmp_path / "c2i.pt")
    assert main(["convert", "llamagen-gpt", str(tmp_path / "c2i.pt"), str(tmp_path / "gpt"),
                 "--num-attention-heads", str(HEADS), "--grid-size", str(GRID)]) == 0  # fmt: skip
    pipe = GloTokPipeline(vqmodel=AutoModel.from_pretrained(tmp_path / "vq"),
                          prior=AutoModelForCausalLM.from_pretrained(tmp_path / "gpt"))  # fmt: skip
    pipe.save_pretrained(tmp_path / "llamagen-tiny")
    loaded = GloTokPipeline.from_pretrained(tmp_path / "llamagen-tiny")
    loaded.set_progress_bar_config(disable=True)
    out = loaded([0, 3], guidance_scale=1.75, top_k=1, output_type="latent")
    torch.testing.assert_close(
        out.visual_indices.flatten(1), reference_greedy(sd, [0, 3], 1.75, False), rtol=0, atol=0
    )
    assert main(["generate", "--pipeline", str(tmp_path / "llamagen-tiny"), "--class-labels", "0", "3",
                 "--top-k", "1", "--device", "cpu", "--output", str(tmp_path / "grid.png")]) == 0  # fmt: skip
    assert (tmp_path / "grid.png").is_file()
