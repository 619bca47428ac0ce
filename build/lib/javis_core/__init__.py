"""JavisDiT++ joint audio-video generation on diffusers."""

# Exported at the package top level so that diffusers' model_index.json can name the library "javis_core".
from .transformer import JavisDiTTransformer3DModel  # noqa: E402,F401
from .pipeline import JavisDiTPipeline  # noqa: E402,F401
