"""Speed options: sampling presets, diffusers' step caches, regional compilation and the attention backend.

Only the ``exact`` preset reproduces the official sampler (50 Euler steps, no cache); the others trade fidelity for
time and are approximations. Their deviation from ``exact`` was measured on the offline demo model only
(``benchmarks/presets.py``); their quality on the released weights has not been measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import FirstBlockCacheConfig

from ..models.transformer import JavisDiTTransformer3DModel


@dataclass(frozen=True)
class Preset:
    """Sampler settings of a preset. ``cache_threshold``: FirstBlockCache's threshold (None: no cache)."""

    num_inference_steps: int
    scheduler: str
    cache_threshold: float | None = None
    description: str = ""


PRESETS: dict[str, Preset] = {
    "exact": Preset(50, "euler", None, "the official sampler: 50 Euler steps"),
    "fast": Preset(16, "unipc", None, "approximate: 16 UniPC steps"),
    "fastest": Preset(10, "unipc", 0.1, "approximate: 10 UniPC steps and a first-block cache"),
}

# Short names for diffusers' attention backends (diffusers.models.attention_dispatch.AttentionBackendName).
ATTENTION_ALIASES = {"cudnn": "_native_cudnn", "efficient": "_native_efficient", "math": "_native_math",
                     "flash3": "_flash_3"}  # fmt: skip


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)} (got {name!r})")
    return PRESETS[name]


def cache_config(preset: Preset) -> FirstBlockCacheConfig | None:
    """The diffusers cache config a preset enables during sampling, or None."""
    return None if preset.cache_threshold is None else FirstBlockCacheConfig(threshold=preset.cache_threshold)


def attention_backends() -> list[str]:
    """Backend names ``set_attention_backend`` accepts (whether the package behind one is installed is checked
    when it is set)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    names = [backend.value for backend in AttentionBackendName if not backend.value.startswith("_")]
    return sorted(names + list(ATTENTION_ALIASES))


def resolve_attention_backend(backend: str) -> str:
    """diffusers' name for a backend ("cudnn" -> "_native_cudnn"); ValueError naming the choices if unknown."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    name = ATTENTION_ALIASES.get(backend, backend)
    if name not in {b.value for b in AttentionBackendName}:
        raise ValueError(f"attention backend must be one of {', '.join(attention_backends())} (got {backend!r})")
    return name


def set_attention_backend(transformer: JavisDiTTransformer3DModel, backend: str) -> None:
    """Route the transformer's attention through one of diffusers' backends ("native", "cudnn", "flash", "sage",
    ...). diffusers raises a RuntimeError naming the package to install when the backend's is missing."""
    transformer.set_attention_backend(resolve_attention_backend(backend))


def compile_transformer(transformer: JavisDiTTransformer3DModel, fullgraph: bool = True) -> None:
    """Regional compilation (diffusers' ``compile_repeated_blocks``): each ``JavisDiTBlock`` is compiled once and
    reused by all 30; the first call of a new request size pays the compile time (after a second size torch
    compiles a dynamic-shape version). On a GPU this took a step 13-15% faster (issue 26's H200 figures)."""
    transformer.compile_repeated_blocks(fullgraph=fullgraph)
