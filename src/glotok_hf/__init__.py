# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""glotok-hf: GloTok (Global Perspective Tokenizer, AAAI-26) for the Hugging Face ecosystem.

Importing the package registers its configs and models with transformers' `AutoConfig` / `AutoModel` and marks
`GloTokConfig` / `GloTokModel` for `auto_map` export, so `save_pretrained` folders also load with
`trust_remote_code=True` where this package is not installed. The import stays light (`glotok --help` must not wait
for torch): public names are imported on first use, and the registration runs as soon as transformers (or a model
module of this package) has finished importing, so `import glotok_hf; AutoModel.from_pretrained(folder)` works in
either import order.
"""

import functools
import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

# module -> the public names it defines, imported on first use
_EXPORTS = {
    "configuration_glotok": "GloTokConfig",
    "convert": "convert_checkpoint export_checkpoint",
    "configuration_glotok_prior": "GloTokPriorConfig PRIOR_PRESETS prior_preset",
    "modeling_glotok_prior": "GloTokPriorForCausalLM GloTokPriorOutput",
    "discriminator": "GloTokDiscriminator GloTokDiscriminatorConfig",
    "modeling_glotok": "GloTokDecoderOutput GloTokEncoderOutput GloTokModel GloTokModelOutput GloTokPreTrainedModel",
    "pipeline_glotok": "GloTokPipeline GloTokPipelineOutput",
    "prior": "PRIOR_SIZES build_prior layout_from_configs prior_config prior_training_batch",
    "sampling": "TokenLayout sample_image_tokens",
    "teacher": "TeacherHistogram load_teacher random_codebook_teacher teacher_from_backbone teacher_from_codebook "
    "teacher_from_tokens uniform_teacher",
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names.split()}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def _register() -> None:
    """Register the model classes with the Auto classes (this imports torch and transformers)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_glotok import GloTokConfig
    from .configuration_glotok_prior import GloTokPriorConfig
    from .discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
    from .modeling_glotok import GloTokModel
    from .modeling_glotok_prior import GloTokPriorForCausalLM

    pairs = (GloTokConfig, GloTokModel), (GloTokDiscriminatorConfig, GloTokDiscriminator)
    for config, model in (*pairs, (GloTokPriorConfig, GloTokPriorForCausalLM)):
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoModel.register(config, model, exist_ok=True)
    AutoModelForCausalLM.register(GloTokPriorConfig, GloTokPriorForCausalLM, exist_ok=True)
    for config in (GloTokConfig, GloTokPriorConfig):
        config.register_for_auto_class()
    GloTokModel.register_for_auto_class("AutoModel")
    GloTokPriorForCausalLM.register_for_auto_class("AutoModelForCausalLM")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs [`_register`] once transformers or a model module of this package has been imported and none of them is
    still importing (a model module imports transformers halfway through its own import; so does `sampling`, which
    the prior's model module imports)."""

    watched = {
        "transformers",
        *(
            f"{__name__}.{m}"
            for m in (
                "configuration_glotok",
                "modeling_glotok",
                "discriminator",
                "configuration_glotok_prior",
                "modeling_glotok_prior",
                "sampling",
            )
        ),
    }
    loading: set[str] = set()

    def find_spec(self, name, path, target=None):
        if name not in self.watched:
            return None
        finders = (finder for finder in sys.meta_path if finder is not self and hasattr(finder, "find_spec"))
        spec = next((spec for finder in finders if (spec := finder.find_spec(name, path, target))), None)
        if spec is not None and spec.loader is not None:  # a per-module loader: wrap its exec_module
            spec.loader.exec_module = functools.partial(self.exec_module, spec.loader.exec_module)
        return spec

    def exec_module(self, exec_module, module) -> None:
        self.loading.add(module.__name__)
        try:
            exec_module(module)
        finally:
            self.loading.discard(module.__name__)
        if not self.loading and self in sys.meta_path:
            sys.meta_path.remove(self)
            _register()


if "transformers" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterAfterImport())

__all__ = ["__version__", *sorted(_LAZY)]
