# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""glotok-hf: GloTok (Global Perspective Tokenizer, AAAI-26) for the Hugging Face ecosystem.

Importing the package registers `GloTokConfig` / `GloTokModel` with transformers' `AutoConfig` / `AutoModel`, and marks
them for `auto_map` export so `save_pretrained` folders also load with `trust_remote_code=True` where this package is
not installed.
"""

from transformers import AutoConfig, AutoModel

from .configuration_glotok import GloTokConfig
from .discriminator import GloTokDiscriminator, GloTokDiscriminatorConfig
from .modeling_glotok import (
    GloTokDecoderOutput,
    GloTokEncoderOutput,
    GloTokModel,
    GloTokModelOutput,
    GloTokPreTrainedModel,
)
from .prior import PRIOR_SIZES, build_prior, layout_from_configs, prior_config, prior_training_batch
from .sampling import TokenLayout, sample_image_tokens
from .teacher import (
    TeacherHistogram,
    load_teacher,
    random_codebook_teacher,
    teacher_from_backbone,
    teacher_from_codebook,
    teacher_from_tokens,
    uniform_teacher,
)

__version__ = "0.1.0"

_LAZY = {"GloTokPipeline": "pipeline_glotok", "GloTokPipelineOutput": "pipeline_glotok"}


def __getattr__(name: str):
    # The pipeline pulls in diffusers (several seconds); import it only when it is asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AutoConfig.register(GloTokConfig.model_type, GloTokConfig, exist_ok=True)
AutoModel.register(GloTokConfig, GloTokModel, exist_ok=True)
AutoConfig.register(GloTokDiscriminatorConfig.model_type, GloTokDiscriminatorConfig, exist_ok=True)
AutoModel.register(GloTokDiscriminatorConfig, GloTokDiscriminator, exist_ok=True)
GloTokConfig.register_for_auto_class()
GloTokModel.register_for_auto_class("AutoModel")

__all__ = [
    "PRIOR_SIZES",
    "GloTokConfig",
    "GloTokDecoderOutput",
    "GloTokDiscriminator",
    "GloTokDiscriminatorConfig",
    "GloTokEncoderOutput",
    "GloTokModel",
    "GloTokModelOutput",
    "GloTokPipeline",
    "GloTokPipelineOutput",
    "GloTokPreTrainedModel",
    "TeacherHistogram",
    "TokenLayout",
    "build_prior",
    "load_teacher",
    "layout_from_configs",
    "prior_config",
    "prior_training_batch",
    "random_codebook_teacher",
    "sample_image_tokens",
    "teacher_from_backbone",
    "teacher_from_codebook",
    "teacher_from_tokens",
    "uniform_teacher",
]
