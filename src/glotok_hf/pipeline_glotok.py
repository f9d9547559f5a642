# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
#
# The structure follows diffusers' DiTPipeline and AmusedPipeline (Apache-2.0); re-implemented, nothing is copied.
"""GloTokPipeline: class-conditional image generation with a GloTok tokenizer and an autoregressive prior.

This file is shipped as Hub remote code (`glotok_hf.hub.save_remote_code_pipeline` writes it at the root of an
exported pipeline, with `sampling` and `utils` inlined), so it imports only torch, numpy, PIL, diffusers, transformers
and those two modules. Its module path `glotok_hf.pipeline_glotok` is recorded in saved pipelines: keep it stable.
"""

import difflib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, replace_example_docstring
from transformers import PreTrainedModel

from .sampling import TokenLayout, check_sampling_inputs, sample_image_tokens
from .utils import is_int

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


def _normalize_id2label(id2label) -> dict[int, str] | None:
    """`{id: name}` with int keys (JSON turns them into strings) and non-empty str values, or `None`."""
    if id2label is not None and not isinstance(id2label, Mapping):
        raise TypeError(f"id2label must be a mapping {{class id: label name}} or None, got {type(id2label).__name__}.")
    for key, name in (id2label or {}).items():
        if not (is_int(key) or str(key).isdigit()) or not isinstance(name, str) or not name.strip():
            raise ValueError(f"id2label keys must be class ids (ints or digit strings) and values non-empty label "
                             f"names, got {key!r}: {name!r}.")  # fmt: skip
    return None if id2label is None else dict(sorted((int(key), name) for key, name in id2label.items()))


class GloTokPipeline(DiffusionPipeline):
    r"""
    Class-conditional image generation with a [GloTok](https://arxiv.org/abs/2511.14184) tokenizer and an
    autoregressive prior: the prior samples the image's codebook tokens after a class token, with classifier-free
    guidance, and the tokenizer decodes them to pixels.

    This model inherits from [`DiffusionPipeline`]: `save_pretrained`, `from_pretrained`, `to`, offloading and
    progress-bar settings work as for any diffusers pipeline. A `save_pretrained` folder names glotok-hf's modules, so
    it loads where glotok-hf is installed. `push_to_hub` (diffusers' signature) uploads the remote-code layout instead,
    which loads with `DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)` where glotok-hf is not
    installed; `glotok_hf.hub.save_remote_code_pipeline(pipe, folder)` writes that layout to a local folder.

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
    # Step-end callbacks may read and replace the image tokens sampled so far (diffusers' conventional name).
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self, vqmodel: PreTrainedModel, prior: PreTrainedModel, id2label: dict[int, str] | dict[str, str] | None = None
    ):
        super().__init__()
        id2label = _normalize_id2label(id2label)
        self.register_modules(vqmodel=vqmodel, prior=prior)
        # JSON keys are strings: register them as such so a fresh and a reloaded pipeline have the same config.
        self.register_to_config(id2label=None if id2label is None else {str(k): v for k, v in id2label.items()})
        self.id2label = id2label
        self.layout = None if vqmodel is None or prior is None else self._build_layout(vqmodel, prior, id2label)
        self._index_labels(id2label)
        factor = getattr(getattr(vqmodel, "config", None), "downsample_factor", 8)
        self.image_processor = VaeImageProcessor(vae_scale_factor=factor, do_normalize=True)

    # ------------------------------------------------------------------------------------------ construction
    @staticmethod
    def _build_layout(vqmodel, prior, id2label: dict[int, str] | None) -> TokenLayout:
        vq_config, prior_config = getattr(vqmodel, "config", None), getattr(prior, "config", None)
        if not all(
            hasattr(vq_config, n) for n in ("visual_codebook_size", "semantic_codebook_size", "latent_grid_size")
        ):
            raise TypeError(f"vqmodel must be a GloTokModel, got {type(vqmodel).__name__}.")
        if getattr(prior_config, "vocab_size", None) is None:
            raise TypeError(f"prior must be a causal LM with config.vocab_size, got {type(prior).__name__}.")
        sizes = vq_config.visual_codebook_size, vq_config.semantic_codebook_size
        layout = TokenLayout.from_vocab_size(prior_config.vocab_size, *sizes, id2label and list(id2label))
        grid, trained = vq_config.latent_grid_size, getattr(prior_config, "image_grid_size", None)
        needed = layout.sequence_length(grid * grid)
        max_positions = getattr(prior_config, "max_position_embeddings", None) or needed
        problems = [
            (trained is not None and list(trained) != [grid, grid],
             f"it was trained on {'x'.join(map(str, trained or ()))} token grids, but the tokenizer (sample_size "
             f"{vq_config.sample_size}) makes {grid}x{grid} grids, so its samples would be scrambled"),
            (max_positions != needed,
             f"a {grid}x{grid} token grid is a sequence of {needed} positions (class token + {needed - 1} image "
             f"tokens), but the prior was built for max_position_embeddings={max_positions}"),
        ]  # fmt: skip
        for failed, message in problems:
            if failed:
                raise ValueError(f"The prior does not fit the tokenizer: {message}. Use the tokenizer the prior was "
                                 "trained with, or train the prior on this tokenizer's codes.")  # fmt: skip
        return layout

    # --------------------------------------------------------------------------------------------- labels
    @property
    def num_classes(self) -> int:
        """Number of class labels the prior knows (its null class excluded)."""
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
        integer (`"3"`) is that class id, so a name always wins over an id. A list may nest one level, as
        `DiTPipeline` accepts: `[[1], [1]]` is `[1, 1]`. An unknown name raises a `ValueError` listing close matches;
        a name shared by several classes, or an id outside `[0, num_classes)`, raises a `ValueError` too.

        Args:
            label (`int`, `str`, or a list of them; also a 1-d integer `torch.Tensor` or `np.ndarray`).

        Returns:
            `list[int]`: one class id per label.
        """
        if isinstance(label, torch.Tensor):
            label = label.cpu().numpy()
        if isinstance(label, np.ndarray):
            if label.ndim > 1 or label.dtype.kind not in "iu":
                raise ValueError(
                    f"class_labels given as an array must be a 1-d array of integer ids, got dtype {label.dtype} and "
                    f"shape {tuple(label.shape)}."
                )
            label = label.tolist()
        if isinstance(label, (str, bytes)) or is_int(label):
            label = [label]
        if not isinstance(label, Sequence):
            raise TypeError(
                f"class_labels must be an int, a label name (str) or a list of them, got {type(label).__name__} "
                f"{label!r}."
            )
        flat = [x for item in label for x in (item if isinstance(item, (list, tuple)) else [item])]
        if not flat:
            raise ValueError(
                "class_labels must be an int, a label name or a non-empty list of them, got an empty list."
            )
        return [self._label_id(item) for item in flat]

    def _label_id(self, label) -> int:
        """The class id of one label, by the rules of `get_label_ids`."""
        label = label.decode() if isinstance(label, bytes) else label
        if not is_int(label) and not isinstance(label, str):
            raise TypeError(
                f"A class label must be an int or a label name (str), got {type(label).__name__} {label!r}."
            )
        name = label.strip() if isinstance(label, str) else None
        ids = name is not None and (self._name_to_ids.get(name) or self._folded_to_ids.get(name.casefold()))
        if ids and len(ids) > 1:
            raise ValueError(f"The label {label!r} names several classes {sorted(ids)}; pass the class id instead.")
        if ids:
            return min(ids)
        if name is not None and not re.fullmatch(r"[+-]?[0-9]+", name):
            if not self._name_to_ids:
                raise ValueError(
                    f"Unknown class label {label!r}: this pipeline has no label names (id2label); pass ids."
                )
            folded = {n.casefold(): n for n in self._name_to_ids}
            matches = difflib.get_close_matches(name.casefold(), list(folded), n=5, cutoff=0.6)
            if matches:
                hint = "did you mean " + ", ".join(repr(folded[m]) for m in matches) + "?"
            else:
                shown = ", ".join(repr(n) for n in list(self._name_to_ids)[:10])
                more = ", ..." if len(self._name_to_ids) > 10 else ""
                hint = f"no close match among the {len(self._name_to_ids)} names ({shown}{more}; see pipe.labels)"
            raise ValueError(f"Unknown class label {label!r}: {hint}")
        if not 0 <= int(label) < self.num_classes:
            raise ValueError(
                f"Class id {int(label)} is out of range: this pipeline has {self.num_classes} classes, ids 0 to "
                f"{self.num_classes - 1}."
            )
        return int(label)

    # ------------------------------------------------------------------------------------------- properties
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """Tokens sampled per image in the last call (the AR counterpart of denoising steps)."""
        return self._num_timesteps

    # ----------------------------------------------------------------------------------------------- call
    def check_inputs(
        self, class_labels, num_images_per_label, generator, output_type, callback_on_step_end_tensor_inputs, **options
    ) -> None:
        """Check every argument of `__call__` once, before anything runs: the labels, the counts, the output type,
        the callback tensors, and (through `glotok_hf.sampling.check_sampling_inputs`) the sampling `options`
        (guidance, temperature, top-k/p), the generators and the memory the batch needs. The sampler trusts them."""
        num_labels = len(self.get_label_ids(class_labels))
        if not is_int(num_images_per_label) or num_images_per_label < 1:
            raise ValueError(f"num_images_per_label must be a positive int, got {num_images_per_label!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs may only name {self._callback_tensor_inputs}, got {unknown}."
            )
        positions, batch_size = self.vqmodel.config.latent_grid_size**2, num_labels * num_images_per_label
        device = self._execution_device
        check_sampling_inputs(
            self.prior, self.layout, batch_size, positions, generator=generator, device=device, **options
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
        cache_implementation: str = "dynamic",
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
                guidance, 0 samples unconditionally, `0 < s < 1` interpolates (LlamaGen and FQGAN do not guide at
                all for `s <= 1`: pass 1 to reproduce such a run).
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
            cache_implementation (`str`, *optional*, defaults to `"dynamic"`): the prior's KV cache, `"dynamic"` or
                `"static"` (pre-allocated, for `pipe.prior.forward = torch.compile(pipe.prior.forward)` on a GPU).
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (float `(B, H, W, 3)` in [0, 1]), `"pt"` (float `(B, 3, H, W)` in [0, 1]) or
                `"latent"` (no decoding; only the indices are returned).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`GloTokPipelineOutput`]; otherwise the tuple `(images, visual_indices, semantic_indices)`.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after each sampled token as `callback_on_step_end(pipe, step_index, step_index,
                callback_kwargs)`; `step_index` counts the tokens of each image from 0 (an AR pipeline has no noise
                timesteps, so the timestep argument repeats it). It must return a dict; a `"latents"` entry in it
                replaces the tokens sampled so far, and sampling continues from the edited tokens.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*):
                Tensors to pass in `callback_kwargs`, a subset of `_callback_tensor_inputs`: `"latents"` is a copy of
                the image-token ids sampled so far, a `torch.LongTensor` of shape `(batch, step_index + 1)` in the
                prior's token layout (conditional rows only; visual and semantic codes interleaved, see
                `glotok_hf.sampling.TokenLayout`).

        Examples:

        Returns:
            [`GloTokPipelineOutput`] or `tuple`: the images and the sampled index grids.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        options = dict(guidance_scale=guidance_scale, guidance_schedule=guidance_schedule, top_k=top_k, top_p=top_p,
                       guidance_interval=guidance_interval, temperature=temperature,
                       cache_implementation=cache_implementation)  # fmt: skip
        tensor_inputs = callback_on_step_end_tensor_inputs or []
        self.check_inputs(class_labels, num_images_per_label, generator, output_type, tensor_inputs, **options)
        self._guidance_scale = guidance_scale
        grid = self.vqmodel.config.latent_grid_size
        self._num_timesteps = self.layout.num_image_tokens(grid * grid)
        labels = torch.tensor(self.get_label_ids(class_labels)).repeat_interleave(num_images_per_label)

        with self.progress_bar(total=self._num_timesteps) as progress_bar:

            def on_step(step: int, tokens: torch.LongTensor) -> torch.LongTensor | None:
                progress_bar.update()
                if callback_on_step_end is None:
                    return None
                outputs = callback_on_step_end(self, step, step, {name: tokens.clone() for name in tensor_inputs})
                return outputs.pop("latents", None)

            device = self._execution_device
            tokens = sample_image_tokens(self.prior, self.layout, labels, grid * grid, generator=generator,
                                         callback=on_step, device=device, validate=False, **options)  # fmt: skip
        visual_indices, semantic_indices = self.layout.to_indices(tokens, grid=(grid, grid))

        images = None
        if output_type != "latent":
            hook = getattr(self.vqmodel, "_hf_hook", None)  # model CPU offload: decode is no forward, so load it here
            if hook is not None and hasattr(hook, "pre_forward"):
                hook.pre_forward(self.vqmodel)
            # The sampler keeps tokens in the layout's ranges (`to_indices` checked edited ones): decode trusts them.
            images = self.vqmodel.decode(semantic_indices, visual_indices, return_dict=True).sample
            images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return images, visual_indices, semantic_indices
        return GloTokPipelineOutput(images=images, visual_indices=visual_indices, semantic_indices=semantic_indices)

    # ------------------------------------------------------------------------------------------------- push
    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
    ) -> str:
        r"""
        Diffusers' `push_to_hub` (same arguments), uploading the remote-code layout with a model card so that
        `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` works where glotok-hf is not installed.
        A thin hook: it hands off to `glotok_hf.hub.push_pipeline_to_hub`, which also takes a model card, card fields
        and a sample grid. An existing README.md in the repo is kept; the token goes only into request headers.

        Returns:
            `huggingface_hub.CommitInfo`: the commit (a `str`, its URL).
        """
        try:  # by name, not an `import` statement: remote-code loaders ask for every package this file imports
            hub = importlib.import_module("glotok_hf.hub")
        except ImportError as err:
            raise ImportError("Pushing a GloTokPipeline needs the glotok-hf package (pip install glotok-hf).") from err
        return hub.push_pipeline_to_hub(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            safe_serialization=safe_serialization, variant=variant, subfolder=subfolder,
        )  # fmt: skip


__all__ = ["GloTokPipeline", "GloTokPipelineOutput"]
