# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""The Gradio app of `glotok demo` and of the Space (`spaces/glotok`): a Generate tab (class-conditional samples with
their sampled code maps) and a Tokenize tab (reconstruction, per-pixel error, PSNR, code maps, codebook usage)."""

import functools
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from .data import ImageTransform, decode_image, image_grid, tensor_to_pil
from .evaluation.reconstruction import reconstruct
from .loading import load_pipeline, load_tokenizer

MAX_IMAGES = 64  # per click: the app is shared, and a CPU Space must stay responsive
VIEW_SIZE = 192  # images are shown at least this large: a 24-pixel digit at 24 px is unreadable


def upscale(image: Image.Image, size: int = VIEW_SIZE) -> Image.Image:
    """Nearest-neighbour upscaling by the integer factor that brings the longer side closest to `size`."""
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def friendly(handler):
    """Show a handler's user errors (and the pipeline's) as a message in the page, never a traceback."""

    @functools.wraps(handler)  # keeps the signature: gradio finds the `gr.Progress` argument through it
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except (ValueError, TypeError, OSError) as err:
            raise gr.Error(str(err), print_exception=False) from err

    return wrapped


def build_demo(pipeline=None, tokenizer=None, *, device=None, trust_remote_code: bool = False) -> gr.Blocks:
    """The app for a pipeline (folder, Hub id or `None` for the embedded default) and a tokenizer for the Tokenize
    tab (folder or Hub id; `None` for the pipeline's own)."""
    pipe = load_pipeline(pipeline, device=device, trust_remote_code=trust_remote_code)
    model = pipe.vqmodel if tokenizer is None else load_tokenizer(tokenizer, device=device)
    sizes = {name: getattr(model.config, f"{name}_codebook_size") for name in ("semantic", "visual")}
    num_codes = max(getattr(m.config, f"{name}_codebook_size") for m in (model, pipe.vqmodel) for name in sizes)
    palette = np.random.default_rng(0).integers(0, 256, (num_codes, 3), dtype=np.uint8)  # both models' codes

    def code_grids(codes) -> list[tuple[str, torch.Tensor]]:  # (name, indices) of each codebook in a model output
        return [(name, v) for name in ("semantic", "visual") if (v := getattr(codes, f"{name}_indices")) is not None]

    def code_maps(codes, i: int, size: int) -> list[Image.Image]:  # image i's grids, one fixed colour per code id
        pictures = [Image.fromarray(palette[v[i].cpu().numpy()]) for _, v in code_grids(codes)]
        return [picture.resize((size, size), Image.Resampling.NEAREST) for picture in pictures]

    names = pipe.id2label or {i: str(i) for i in range(pipe.num_classes)}

    @friendly
    def generate(labels, per_label, guidance_scale, temperature, top_k, seed, progress=gr.Progress()):  # noqa: B008
        if not labels or per_label is None or seed is None:
            raise ValueError("Pick at least one class, and give a number of images and a seed.")
        label_ids = pipe.get_label_ids(list(labels))
        if not 1 <= len(label_ids) * per_label <= MAX_IMAGES:
            raise ValueError(f"{len(label_ids)} classes x {per_label} images asked for: this demo makes 1 to "
                             f"{MAX_IMAGES} images per click.")  # fmt: skip

        def on_step(pipe, step, timestep, tensors):
            progress((step + 1) / pipe.num_timesteps, desc="sampling tokens")
            return {}

        generator = [torch.Generator().manual_seed(int(seed) + i) for i in range(len(label_ids) * per_label)]
        out = pipe(label_ids, num_images_per_label=int(per_label), guidance_scale=guidance_scale, top_k=top_k or None,
                   temperature=temperature, generator=generator, callback_on_step_end=on_step)  # fmt: skip
        shown = []
        for i, image in enumerate(out.images):
            image = upscale(image)
            sheet = Image.new("RGB", (image.width, image.height + image.width // 2), "white")
            sheet.paste(image)
            sheet.paste(image_grid(code_maps(out, i, image.width // 2), cols=2), (0, image.height))
            label = label_ids[i // per_label]
            shown.append((sheet, f"{label} {names[label]}, seed {int(seed) + i}"))
        return shown

    @friendly
    def tokenize(path):
        image = None if path is None else decode_image(path)
        if image is None:
            raise ValueError("Upload an image file (PNG, JPEG, ...): this one cannot be read as an image.")
        pixels = ImageTransform(model.config.sample_size)(image)[None].to(model.device, model.dtype)
        codes, reconstruction, (psnr,) = reconstruct(model, pixels)
        original = pixels.float().cpu()
        error = ((reconstruction - original).abs().mean(1, keepdim=True) * 4 - 1).clamp(-1, 1).expand(-1, 3, -1, -1)
        views = [upscale(x) for x in tensor_to_pil(torch.cat([original, reconstruction, error]))]
        usage = [f"{name} codes: {v.unique().numel()} distinct of {sizes[name]}" for name, v in code_grids(codes)]
        maps = image_grid(code_maps(codes, 0, views[0].width), cols=2)
        return image_grid(views, cols=3), maps, f"PSNR {psnr:.2f} dB · " + " · ".join(usage)

    pipe.set_progress_bar_config(disable=True)  # the page shows the progress
    examples = Path(tempfile.mkdtemp(prefix="glotok-demo-"))  # a sample of the first classes (this warms up too)
    count = min(pipe.num_classes, 4)
    for i, image in enumerate(pipe(list(range(count)), generator=torch.Generator().manual_seed(0)).images):
        image.save(examples / f"{i}_{names[i]}.png")

    with gr.Blocks(title="GloTok") as demo:
        gr.Markdown("# GloTok\nClass-conditional generation with an autoregressive prior over GloTok codes, and the "
                    "tokenizer itself. Code maps: one colour per code id.")  # fmt: skip
        with gr.Tab("Generate"):
            with gr.Row():
                choices = [(f"{i}: {name}", str(i)) for i, name in names.items()]
                classes = gr.Dropdown(choices, value=[choices[-1][1]], multiselect=True, allow_custom_value=True,
                                      label="Classes (pick, or type an id or a name)", elem_id="classes")  # fmt: skip
                per_label = gr.Number(4, precision=0, label="Images per class", elem_id="count")
                seed = gr.Number(0, precision=0, label="Seed (image i uses seed + i)", elem_id="seed")
            with gr.Row():
                guidance = gr.Slider(0, 10, value=2.0, step=0.1, label="Guidance scale")
                temperature = gr.Slider(0.05, 2, value=1.0, step=0.05, label="Temperature")
                top_k = gr.Number(0, precision=0, minimum=0, label="Top-k (0: all codes)")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            gallery = gr.Gallery(label="image; below: semantic | visual codes", columns=4, object_fit="contain",
                                 height="auto", format="png", elem_id="gallery")  # fmt: skip
            button.click(generate, [classes, per_label, guidance, temperature, top_k, seed], gallery)
        with gr.Tab("Tokenize"):
            upload = gr.File(label="Image", file_types=["image"], elem_id="upload")
            gr.Examples([[str(path)] for path in sorted(examples.iterdir())], upload)
            button = gr.Button("Tokenize", variant="primary", elem_id="tokenize")
            views = gr.Image(label="original | reconstruction | per-pixel error (x4)", format="png", elem_id="views")
            maps = gr.Image(label="semantic codes | visual codes", format="png")
            stats = gr.Markdown(elem_id="stats")
            button.click(tokenize, upload, [views, maps, stats])
    return demo
