# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""glotok-hf: GloTok (Global Perspective Tokenizer, AAAI-26) for the Hugging Face ecosystem.

Importing the package registers `GloTokConfig` / `GloTokModel` with transformers' `AutoConfig` / `AutoModel`, and marks
them for `auto_map` export so `save_pretrained` folders also load with `trust_remote_code=True` where this package is
not installed.

The import itself is light (the `glotok` command's `--help` must not wait for torch): the public names are imported on
first use, and the registration runs at once when transformers is already imported, else as soon as transformers (or a
model module of this package) finishes importing, so `import glotok_hf; AutoModel.from_pretrained(folder)` works in
either import order.
"""

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

_LAZY = {
    "GloTokConfig": "configuration_glotok",
    **dict.fromkeys(["GloTokDiscriminator", "GloTokDiscriminatorConfig"], "discriminator"),
    **dict.fromkeys(["GloTokPipeline", "GloTokPipelineOutput"], "pipeline_glotok"),
    **dict.fromkeys(["TokenLayout", "sample_image_tokens"], "sampling"),
    **dict.fromkeys(
        ["GloTokDecoderOutput", "GloTokEncoderOutput", "GloTokModel", "GloTokModelOutput", "GloTokPreTrainedModel"],
        "modeling_glotok",
    ),
    **dict.fromkeys(
        ["PRIOR_SIZES", "build_prior", "layout_from_configs", "prior_config", "prior_training_batch"], "prior"
    ),
    **dict.fromkeys(
        [
            "TeacherHistogram",
            "load_teacher",
            "random_codebook_teacher",
            "teacher_from_backbone",
            "teacher_from_codebook",
            "teacher_from_tokens",
            "uniform_teacher",
        ],
        "teacher",
    ),  # fmt: skip
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def _register() -> None:
    """Register the model classes with the Auto classes (this imports torch and transformers)."""
    from transformers import AutoConfig, AutoModel

    from .configuration_glotok import GloTokConfig
    from .discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
    from .modeling_glotok import GloTokModel

    AutoConfig.register(GloTokConfig.model_type, GloTokConfig, exist_ok=True)
    AutoModel.register(GloTokConfig, GloTokModel, exist_ok=True)
    AutoConfig.register(GloTokDiscriminatorConfig.model_type, GloTokDiscriminatorConfig, exist_ok=True)
    AutoModel.register(GloTokDiscriminatorConfig, GloTokDiscriminator, exist_ok=True)
    GloTokConfig.register_for_auto_class()
    GloTokModel.register_for_auto_class("AutoModel")


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs [`_register`] once transformers or a model module of this package has finished importing and no other
    of them is still importing (a model module imports transformers halfway through its own import)."""

    watched = {
        "transformers",
        *(f"{__name__}.{m}" for m in ("configuration_glotok", "modeling_glotok", "discriminator")),
    }
    loading: set[str] = set()

    def find_spec(self, name, path, target=None):
        if name not in self.watched:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, self)
                return spec
        return None

    def done(self, name: str) -> None:
        self.loading.discard(name)
        if not self.loading and self in sys.meta_path:
            sys.meta_path.remove(self)
            _register()


class _Loader(importlib.abc.Loader):
    """Delegates to the module's own loader and tells the hook when the module has been executed."""

    def __init__(self, loader, hook: _RegisterAfterImport):
        self.loader, self.hook = loader, hook

    def __getattr__(self, name):  # get_source, get_filename, resource readers ...
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.hook.loading.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            self.hook.loading.discard(module.__name__)
        self.hook.done(module.__name__)


if "transformers" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterAfterImport())

__all__ = ["__version__", *sorted(_LAZY)]
