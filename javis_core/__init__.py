"""JavisDiT++ joint audio-video generation on diffusers."""

# Exported at the package top level so that diffusers' model_index.json can name the library "javis_core".
from .models.transformer import JavisDiTTransformer3DModel  # noqa: E402,F401
from .pipelines.pipeline_javisdit import JavisDiTPipeline  # noqa: E402,F401
