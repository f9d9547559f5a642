# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The structure follows diffusers' DiTPipeline and AmusedPipeline (Apache-2.0); re-implemented, nothing is copied.
"""GloTokPipeline: class-conditional image generation with a GloTok tokenizer and an autoregressive prior.

This file is shipped as Hub remote code (`glotok_hf.hub.export_remote_code` writes it at the root of an exported
pipeline, with the sampler module inlined), so it imports only torch, numpy, PIL, diffusers, transformers and
`sampling`. Its module path `glotok_hf.pipeline_glotok` is recorded in saved pipelines: keep it stable.
"""

import difflib
import importlib
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, replace_example_docstring
from transformers import PreTrainedModel

from .sampling import TokenLayout, check_sampling_memory, sample_image_tokens

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DiffusionPipeline

        >>> pipe = DiffusionPipeline.from_pretrained("user/glotok-digits", trust_remote_code=True)
        >>> generator = [torch.Generator().manual_seed(i) for i in range(8)]  # one per image
        >>> out = pipe(["seven", 3], num_images_per_label=4, guidance_scale=2.0, generator=generator)
        >>> len(out.images), out.visual_indices.shape[0]
        (8, 8)
        >>> out.images[0].save("seven.png")
        ```
"""

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class GloTokPipelineOutput(BaseOutput):
    r"""
    Output of [`GloTokPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray`, `torch.Tensor` or `None`):
            The generated images: a list of PIL images, a float array `(batch, H, W, 3)` in [0, 1], a float tensor
            `(batch, 3, H, W)` in [0, 1], or `None` for `output_type="latent"` (the tokens are the indices below).
        visual_indices (`torch.LongTensor` of shape `(batch, h, w)` or `None`):
            The sampled visual-codebook indices; `None` when the tokenizer has no visual codebook.
        semantic_indices (`torch.LongTensor` of shape `(batch, h, w)` or `None`):
            The sampled semantic-codebook indices; `None` when the tokenizer has no semantic codebook.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None
    visual_indices: torch.LongTensor | None
    semantic_indices: torch.LongTensor | None


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalize_id2label(id2label) -> dict[int, str] | None:
    """`{id: name}` with int keys (JSON turns them into strings) and str values, or `None`."""
    if id2label is None:
        return None
    if not isinstance(id2label, Mapping):
        raise TypeError(f"id2label must be a mapping {{class id: label name}} or None, got {type(id2label).__name__}.")
    out = {}
    for key, name in id2label.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"id2label keys must be class ids (ints or digit strings), got {key!r}.") from None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"id2label[{key!r}] must be a non-empty label name, got {name!r}.")
        if index in out:
            raise ValueError(f"id2label names class {index} twice ({out[index]!r} and {name!r}).")
        out[index] = name
    return dict(sorted(out.items()))


class GloTokPipeline(DiffusionPipeline):
    r"""
    Class-conditional image generation with a [GloTok](https://arxiv.org/abs/2511.14184) tokenizer and an
    autoregressive prior: the prior samples the image's codebook tokens after a class token, with classifier-free
    guidance, and the tokenizer decodes them to pixels.

    This model inherits from [`DiffusionPipeline`]: `save_pretrained`, `from_pretrained`, `to`, offloading and
    progress-bar settings work as for any diffusers pipeline. `save_pretrained(..., remote_code=True)` and
    `push_to_hub` write a folder that loads with `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`
    where glotok-hf is not installed.

    Args:
        vqmodel ([`GloTokModel`]):
            The tokenizer; its `decode(semantic_indices=..., visual_indices=...)` maps token grids to images.
        prior ([`~transformers.LlamaForCausalLM`]):
            A causal LM over the tokenizer's codes in the [`TokenLayout`] of `glotok_hf.sampling`: vocabulary
            `V + S + C + 1` (visual codes, semantic codes, `C` class tokens, the null class).
        id2label (`dict[int, str]`, *optional*):
            Class names, ImageNet style: `"tench, Tinca tinca"` gives the class two names. Without it, classes are
            addressed by id only. Its length must equal the prior's number of classes.
    """

    model_cpu_offload_seq = "prior->vqmodel"
    _optional_components = []
    # The sampler reports only its progress, not its tensors, so a step-end callback receives no tensors.
    _callback_tensor_inputs = []

    def __init__(
        self, vqmodel: PreTrainedModel, prior: PreTrainedModel, id2label: dict[int, str] | dict[str, str] | None = None
    ):
        super().__init__()
        id2label = _normalize_id2label(id2label)
        self.register_modules(vqmodel=vqmodel, prior=prior)
        # JSON keys are strings: register them as such so a fresh and a reloaded pipeline have the same config.
        self.register_to_config(id2label=None if id2label is None else {str(k): v for k, v in id2label.items()})
        self.id2label = id2label
        self.layout = None
        if vqmodel is not None and prior is not None:
            self.layout = self._build_layout(vqmodel, prior, id2label)
        self._index_labels(id2label)
        factor = getattr(getattr(vqmodel, "config", None), "downsample_factor", 8)
        self.image_processor = VaeImageProcessor(vae_scale_factor=factor, do_normalize=True)

    # ------------------------------------------------------------------------------------------ construction
    @staticmethod
    def _build_layout(vqmodel, prior, id2label: dict[int, str] | None) -> TokenLayout:
        vq_config, prior_config = getattr(vqmodel, "config", None), getattr(prior, "config", None)
        needed = ("visual_codebook_size", "semantic_codebook_size", "latent_grid_size")
        if vq_config is None or not all(hasattr(vq_config, name) for name in needed):
            raise TypeError(
                f"vqmodel must be a GloTokModel (a config with {', '.join(needed)}), got {type(vqmodel).__name__}."
            )
        if getattr(prior_config, "vocab_size", None) is None:
            raise TypeError(f"prior must be a causal LM with config.vocab_size, got {type(prior).__name__}.")
        try:
            layout = TokenLayout.from_vocab_size(
                prior_config.vocab_size,
                vq_config.visual_codebook_size,
                vq_config.semantic_codebook_size,
                num_labels=None if id2label is None else len(id2label),
            )
        except ValueError as err:
            raise ValueError(f"The prior does not fit the tokenizer: {err}") from None
        if id2label is not None and sorted(id2label) != list(range(layout.num_classes)):
            raise ValueError(
                f"id2label must name classes 0..{layout.num_classes - 1} (the prior's {layout.num_classes} classes), "
                f"got ids {sorted(id2label)[:5]}..."
            )
        num_positions = vq_config.latent_grid_size**2
        needed_positions = layout.num_image_tokens(num_positions)
        max_positions = getattr(prior_config, "max_position_embeddings", None)
        if max_positions is not None and max_positions < needed_positions:
            raise ValueError(
                f"The prior does not fit the tokenizer: a {vq_config.latent_grid_size}x{vq_config.latent_grid_size} "
                f"token grid needs {needed_positions} positions (class token + {needed_positions - 1} image tokens), "
                f"but the prior has max_position_embeddings={max_positions}."
            )
        return layout

    # --------------------------------------------------------------------------------------------- labels
    @property
    def num_classes(self) -> int:
        """Number of class labels the prior knows (its null class excluded)."""
        if self.layout is None:
            raise ValueError("This pipeline has no vqmodel or prior, so it has no token layout.")
        return self.layout.num_classes

    def _index_labels(self, id2label: dict[int, str] | None) -> None:
        """Build `self.labels` (name -> id, DiT style; comma-separated synonyms split) and the lookup tables."""
        self._name_to_ids: dict[str, set[int]] = {}
        self._folded_to_ids: dict[str, set[int]] = {}
        for index, names in (id2label or {}).items():
            for name in (n.strip() for n in names.split(",")):
                if name:
                    self._name_to_ids.setdefault(name, set()).add(index)
                    self._folded_to_ids.setdefault(name.casefold(), set()).add(index)
        # A name shared by two classes (ImageNet has "crane" twice) is left out: it can only be asked for by id.
        self.labels = {name: min(ids) for name, ids in sorted(self._name_to_ids.items()) if len(ids) == 1}

    def get_label_ids(self, label: int | str | Sequence[int | str]) -> list[int]:
        r"""
        Class ids of one label or a list of labels.

        Rules: an int is a class id. A string is one label (never split into characters): a class name or one of its
        comma-separated synonyms, matched exactly, else ignoring case. A string that names no label but is an
        integer (`"3"`) is that class id, so a name always wins over an id. An unknown name raises a `ValueError`
        listing close matches; a name shared by several classes, or an id outside `[0, num_classes)`, raises a
        `ValueError` too.

        Args:
            label (`int`, `str`, or a list of them; also a 1-d integer `torch.Tensor` or `np.ndarray`).

        Returns:
            `list[int]`: one class id per label.
        """
        if isinstance(label, (torch.Tensor, np.ndarray)):
            if isinstance(label, np.ndarray):
                integer = label.dtype.kind in "iu"
            else:
                integer = not (label.is_floating_point() or label.is_complex() or label.dtype == torch.bool)
            if label.ndim > 1 or not integer:
                raise ValueError(
                    f"class_labels given as an array must be a 1-d array of integer ids, got dtype {label.dtype} and "
                    f"shape {tuple(label.shape)}."
                )
            label = [int(x) for x in label.reshape(-1).tolist()]
        if isinstance(label, (str, bytes)) or _is_int(label):
            label = [label]
        if not isinstance(label, Sequence):
            raise TypeError(
                f"class_labels must be an int, a label name (str) or a list of them, got {type(label).__name__} "
                f"{label!r}."
            )
        if len(label) == 0:
            raise ValueError(
                "class_labels must be an int, a label name or a non-empty list of them, got an empty list."
            )
        return [self._label_id(item) for item in label]

    def _label_id(self, label) -> int:
        if isinstance(label, bytes):
            label = label.decode()
        if _is_int(label):
            return self._check_id(int(label))
        if not isinstance(label, str):
            raise TypeError(
                f"A class label must be an int or a label name (str), got {type(label).__name__} {label!r}."
            )
        name = label.strip()
        ids = self._name_to_ids.get(name) or self._folded_to_ids.get(name.casefold())
        if ids and len(ids) > 1:
            raise ValueError(f"The label {label!r} names several classes {sorted(ids)}; pass the class id instead.")
        if ids:
            return min(ids)
        if re.fullmatch(r"[+-]?[0-9]+", name):
            return self._check_id(int(name))
        if not self._name_to_ids:
            raise ValueError(f"Unknown class label {label!r}: this pipeline has no label names (id2label); pass ids.")
        folded = {n.casefold(): n for n in self._name_to_ids}
        matches = difflib.get_close_matches(name.casefold(), list(folded), n=5, cutoff=0.6)
        if matches:
            hint = "did you mean " + ", ".join(repr(folded[m]) for m in matches) + "?"
        else:
            shown = ", ".join(repr(n) for n in list(self._name_to_ids)[:10])
            more = ", ..." if len(self._name_to_ids) > 10 else ""
            hint = f"no close match among the {len(self._name_to_ids)} names ({shown}{more}; see pipe.labels)"
        raise ValueError(f"Unknown class label {label!r}: {hint}")

    def _check_id(self, index: int) -> int:
        if not 0 <= index < self.num_classes:
            raise ValueError(
                f"Class id {index} is out of range: this pipeline has {self.num_classes} classes, ids 0 to "
                f"{self.num_classes - 1}."
            )
        return index

    # ------------------------------------------------------------------------------------------- properties
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        """Tokens sampled per image in the last call (the AR counterpart of denoising steps)."""
        return self._num_timesteps

    # ----------------------------------------------------------------------------------------------- call
    def check_inputs(self, num_images_per_label, output_type, callback_on_step_end_tensor_inputs) -> None:
        if not _is_int(num_images_per_label) or num_images_per_label < 1:
            raise ValueError(f"num_images_per_label must be a positive int, got {num_images_per_label!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if callback_on_step_end_tensor_inputs is not None:
            unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
            if unknown:
                raise ValueError(
                    f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {unknown}."
                )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str],
        guidance_scale: float = 2.0,
        num_images_per_label: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        guidance_schedule: str = "constant",
        guidance_interval: tuple[float, float] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> GloTokPipelineOutput | tuple:
        r"""
        Generate images of the given classes.

        Args:
            class_labels (`int`, `str`, or a list of them):
                Class ids and/or label names (see [`~GloTokPipeline.get_label_ids`] for the rules). A string is one
                label: `"seven"` is the class named seven, `"3"` is class 3 unless a class is named "3".
            guidance_scale (`float`, *optional*, defaults to 2.0):
                Classifier-free guidance scale (FQGAN's default): logits `uncond + s * (cond - uncond)`. 1 disables
                guidance, 0 samples unconditionally.
            num_images_per_label (`int`, *optional*, defaults to 1):
                Images per label; the batch is `len(class_labels) * num_images_per_label`, grouped by label.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator for the whole batch, or exactly one per image. With one per image, an image depends
                only on its label and generator, not on the batch it is generated in.
            temperature (`float`, *optional*, defaults to 1.0): softmax temperature (> 0).
            top_k (`int`, *optional*): sample among the `top_k` most likely codes; `None` keeps all.
            top_p (`float`, *optional*, defaults to 1.0): nucleus-sampling threshold in (0, 1]; 1 keeps all.
            guidance_schedule (`str`, *optional*, defaults to `"constant"`):
                `"constant"`, or `"linear"` (the scale ramps from 1 at the first grid position to `guidance_scale`).
            guidance_interval (`tuple[float, float]`, *optional*):
                `(start, end)` fractions of the grid positions outside which guidance is off.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (float `(B, H, W, 3)` in [0, 1]), `"pt"` (float `(B, 3, H, W)` in [0, 1]) or
                `"latent"` (no decoding; only the indices are returned).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`GloTokPipelineOutput`]; otherwise the tuple `(images, visual_indices, semantic_indices)`.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after each sampled token as `callback_on_step_end(pipe, step_index, step_index,
                callback_kwargs)`; `step_index` counts the tokens of each image from 0 (an AR pipeline has no noise
                timesteps, so the timestep argument repeats it). It must return a dict.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Tensors to pass in `callback_kwargs`; must be a subset of `_callback_tensor_inputs` (empty: the
                sampler exposes no tensors mid-way).

        Examples:

        Returns:
            [`GloTokPipelineOutput`] or `tuple`: the images and the sampled index grids.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(num_images_per_label, output_type, callback_on_step_end_tensor_inputs)
        label_ids = self.get_label_ids(class_labels)
        batch_size = len(label_ids) * num_images_per_label
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(
                f"Got {len(generator)} generators for {batch_size} images ({len(label_ids)} labels x "
                f"{num_images_per_label} images per label); pass one generator or exactly one per image."
            )
        self._guidance_scale = guidance_scale
        device = self._execution_device
        grid = self.vqmodel.config.latent_grid_size
        check_sampling_memory(self.prior, self.layout, batch_size, grid * grid, device, guided=guidance_scale != 1.0)
        labels = torch.tensor(label_ids, dtype=torch.long, device=device).repeat_interleave(num_images_per_label)

        self._num_timesteps = self.layout.num_image_tokens(grid * grid)
        bars = []  # opened at the first token, so that a call rejected by the sampler's checks shows no bar

        def on_token(step: int, total: int) -> None:
            if not bars:
                bars.append(self.progress_bar(total=total))
            bars[0].update()
            if callback_on_step_end is not None:
                callback_on_step_end(self, step - 1, step - 1, {})

        try:
            tokens = sample_image_tokens(
                self.prior,
                self.layout,
                labels,
                grid * grid,
                guidance_scale=guidance_scale,
                guidance_schedule=guidance_schedule,
                guidance_interval=guidance_interval,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                callback=on_token,
                device=device,
            )
        finally:
            for bar in bars:
                bar.close()
        visual_indices, semantic_indices = self.layout.to_indices(tokens, grid=(grid, grid))

        images = None
        if output_type != "latent":
            images = self.decode_indices(visual_indices=visual_indices, semantic_indices=semantic_indices)
            images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return images, visual_indices, semantic_indices
        return GloTokPipelineOutput(images=images, visual_indices=visual_indices, semantic_indices=semantic_indices)

    # ------------------------------------------------------------------------------------------ save / push
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        remote_code: bool = False,
        model_card=True,
        card_kwargs: dict | None = None,
        sample_grid: PIL.Image.Image | str | None = "generate",
        **kwargs,
    ):
        r"""
        Save the pipeline to `save_directory`.

        By default this is diffusers' layout, whose `model_index.json` names this package's modules, so the folder
        loads with `GloTokPipeline.from_pretrained` where glotok-hf is installed. With `remote_code=True` (implied by
        `push_to_hub=True`) it writes the remote-code layout of `glotok_hf.hub.export_remote_code` instead, with a
        model card: the folder loads with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` and
        needs only diffusers and transformers.

        Args:
            remote_code (`bool`, *optional*, defaults to `False`): write the self-contained remote-code layout.
            push_to_hub (`bool`, *optional*, defaults to `False`):
                Also upload the folder to the Hub (`repo_id`, `commit_message`, `private`, `token`, `create_pr` in
                `kwargs`; `repo_id` defaults to the folder name).
            model_card (`huggingface_hub.ModelCard` or `bool`, *optional*, defaults to `True`):
                For the remote-code layout: a card to write, `True` for the generated card (an existing README.md is
                kept), `False` for none.
            card_kwargs (`dict`, *optional*):
                Keyword arguments of `glotok_hf.hub.pipeline_model_card`: `training_data`, `metrics`, `license`, ...
            sample_grid (`PIL.Image.Image` or `str`, *optional*, defaults to `"generate"`):
                The card's sample image, `"generate"` to sample one image of each of the first 10 classes, or `None`.
        """
        if not (remote_code or push_to_hub):
            return super().save_pretrained(
                save_directory, safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size,
                **kwargs,
            )  # fmt: skip
        hub = _glotok_hub()
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            card = model_card if not isinstance(model_card, bool) else None
            return hub.push_pipeline_to_hub(
                self, repo_id, folder=save_directory, safe_serialization=safe_serialization, variant=variant,
                model_card=card, card_kwargs=card_kwargs, sample_grid=sample_grid, **kwargs,
            )  # fmt: skip
        hub.save_remote_code_pipeline(
            self, save_directory, safe_serialization=safe_serialization, variant=variant,
            max_shard_size=max_shard_size, model_card=model_card, card_kwargs=card_kwargs, sample_grid=sample_grid,
        )  # fmt: skip

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        model_card=None,
        card_kwargs: dict | None = None,
        sample_grid: PIL.Image.Image | str | None = "generate",
    ):
        r"""
        Upload the pipeline to the Hub repo `repo_id` in the remote-code layout (see `save_pretrained`), so that
        `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` works without glotok-hf.

        The model card is `model_card` when given; otherwise the repo's existing README.md is kept, and a new repo
        gets `glotok_hf.hub.pipeline_model_card(self, **card_kwargs)` with a sample grid (see `save_pretrained`).
        The token is sent as a request header only, never written to a file.

        Returns:
            `huggingface_hub.CommitInfo`: the commit (a `str`, its URL).
        """
        return _glotok_hub().push_pipeline_to_hub(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            safe_serialization=safe_serialization, variant=variant, model_card=model_card, card_kwargs=card_kwargs,
            sample_grid=sample_grid,
        )  # fmt: skip

    def decode_indices(
        self, visual_indices: torch.LongTensor | None = None, semantic_indices: torch.LongTensor | None = None
    ) -> torch.Tensor:
        """Index grids `(B, h, w)` -> images `(B, 3, H, W)` in [-1, 1] (unclamped), in the vqmodel's dtype."""
        vqmodel = self.vqmodel
        hook = getattr(vqmodel, "_hf_hook", None)
        if hook is not None and hasattr(hook, "pre_forward"):  # model CPU offload: load the decoder onto the device
            hook.pre_forward(vqmodel)
        return vqmodel.decode(
            semantic_indices=semantic_indices, visual_indices=visual_indices, return_dict=True
        ).sample


def _glotok_hub():
    """`glotok_hf.hub`, imported on use: this module also runs as Hub remote code, where glotok-hf may be absent."""
    try:
        return importlib.import_module("glotok_hf.hub")  # not an `import` statement: remote-code loaders scan those
    except ImportError as err:
        raise ImportError(
            "Saving a GloTokPipeline in the remote-code layout or pushing it to the Hub needs the glotok-hf package "
            "(pip install glotok-hf)."
        ) from err


__all__ = ["GloTokPipeline", "GloTokPipelineOutput"]
