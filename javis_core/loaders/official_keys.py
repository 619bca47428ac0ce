"""Key names of the official JavisDiT++ / Wan2.1 checkpoints and their counterparts in our diffusers layout.

The mapping is explicit rather than substring-based: diffusers' Wan converter applied blindly mangles the audio
keys (docs/official.md §7.3). Every official key maps to exactly one of ours and back.
"""

from __future__ import annotations

import re

# Module paths outside the blocks: official -> ours. Parameter suffixes (.weight/.bias) are kept.
_TOP_LEVEL = {
    "patch_embedding": "patch_embedding",
    "audio_patch_embedding": "audio_patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "audio_time_projection.1": "audio_time_proj",
    "head.head": "proj_out",
    "audio_head.head": "audio_proj_out",
}
# Bare parameters outside the blocks.
_TOP_LEVEL_PARAMS = {
    "head.modulation": "scale_shift_table",
    "audio_head.modulation": "audio_scale_shift_table",
}
# Module paths inside ``blocks.N.``.
_IN_BLOCK = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    # Official norm3 is the affine cross-attention norm, which diffusers calls norm2.
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "audio_ffn.0": "audio_ffn.net.0.proj",
    "audio_ffn.2": "audio_ffn.net.2",
}
_IN_BLOCK_PARAMS = {
    "modulation": "scale_shift_table",
    "audio_modulation.param": "audio_scale_shift_table",
}

# The 12 linears the official LoRA adapts (docs/official.md §7.2), as official module names inside a block.
OFFICIAL_LORA_TARGETS = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2", "audio_ffn.0", "audio_ffn.2",
)  # fmt: skip

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SUFFIX = re.compile(r"^(.+)\.(weight|bias)$")


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {ours: official for official, ours in table.items()}


def _translate(key: str, modules: dict[str, str], params: dict[str, str], block_modules, block_params) -> str:
    block = _BLOCK_KEY.match(key)
    if block:
        index, rest = block.groups()
        prefix, modules, params = f"blocks.{index}.", block_modules, block_params
    else:
        prefix, rest = "", key
    if rest in params:
        return prefix + params[rest]
    suffix = _SUFFIX.match(rest)
    if suffix and suffix.group(1) in modules:
        return f"{prefix}{modules[suffix.group(1)]}.{suffix.group(2)}"
    raise KeyError(key)


def official_to_diffusers_key(key: str) -> str:
    """``blocks.3.self_attn.q.weight`` -> ``blocks.3.attn1.to_q.weight``; KeyError for a key we do not know."""
    return _translate(key, _TOP_LEVEL, _TOP_LEVEL_PARAMS, _IN_BLOCK, _IN_BLOCK_PARAMS)


def diffusers_to_official_key(key: str) -> str:
    return _translate(
        key, _invert(_TOP_LEVEL), _invert(_TOP_LEVEL_PARAMS), _invert(_IN_BLOCK), _invert(_IN_BLOCK_PARAMS)
    )


def official_module_to_diffusers(module: str) -> str:
    """Module path (no parameter suffix), e.g. ``blocks.0.ffn.0`` -> ``blocks.0.ffn.net.0.proj``."""
    return official_to_diffusers_key(module + ".weight")[: -len(".weight")]
