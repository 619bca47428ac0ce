"""The JavisDiT++ LATENT: ComfyUI's latent dict with the audio beside the video and per-frame reference masks.

* ``samples``: video latents (B, 16, T, h, w) in the video VAE's own (raw) space, so native VAE Decode works;
* ``audio_samples``: AudioLDM2 latents (B, 8, T_audio, 16) in JavisDiT++'s scaling; a sound-only latent holds them
  under ``samples`` with ``type: audio``;
* ``javisdit``: the clip's size {"height", "width", "num_frames"};
* ``noise_mask`` (B, 1, T, 1, 1) and ``audio_noise_mask`` (B, 1, T_audio, 1), set by the Reference nodes: per latent
  frame, 1 = generated, 0 = kept at what ``samples`` holds there, between = the official edit ratio (a frame is held
  while t > 1000 m, docs/official.md §5 "Masks"). ComfyUI's LTXV image-to-video nodes use the same video mask layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from javis_core.pipelines.conditioning import LatentCondition

LATENT_INFO = "javisdit"
AUDIO_SAMPLES = "audio_samples"
VIDEO_MASK = "noise_mask"
AUDIO_MASK = "audio_noise_mask"


def make_latent(video: torch.Tensor | None, audio: torch.Tensor | None, height: int, width: int,
                num_frames: int) -> dict[str, Any]:  # fmt: skip
    latent: dict[str, Any] = {LATENT_INFO: {"height": height, "width": width, "num_frames": num_frames}}
    if video is not None:
        latent["samples"] = video
        if audio is not None:
            latent[AUDIO_SAMPLES] = audio
    else:
        latent.update(samples=audio, type="audio")
    return latent


def unpack_latent(latent: dict[str, Any]) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, int]]:
    """(raw video latents or None, audio latents or None, clip size) of a JavisDiT++ LATENT."""
    info = latent.get(LATENT_INFO)
    if info is None:
        raise ValueError("latent: not a JavisDiT++ latent (make it with JavisDiT++ Empty Latents)")
    if latent.get("type") == "audio":
        return None, latent["samples"], info
    return latent["samples"], latent.get(AUDIO_SAMPLES), info


def audio_keys(latent: dict[str, Any]) -> tuple[str, str]:
    """(samples key, mask key) of the audio latents: beside the video, or alone under ``samples``."""
    return ("samples", VIDEO_MASK) if latent.get("type") == "audio" else (AUDIO_SAMPLES, AUDIO_MASK)


def frame_mask(latent: dict[str, Any], key: str, samples: torch.Tensor) -> torch.Tensor:
    """A new copy of the LATENT's mask under ``key`` for ``samples`` (all ones when it has none)."""
    shape = (samples.shape[0], 1, samples.shape[2], *([1] * (samples.ndim - 3)))
    mask = latent.get(key)
    return torch.ones(shape) if mask is None else mask.float().expand(shape).clone()


def _condition(latents: torch.Tensor, mask: torch.Tensor, key: str) -> LatentCondition:
    expected = (1, latents.shape[2], *([1] * (latents.ndim - 3)))
    if mask.ndim != latents.ndim or tuple(mask.shape[1:]) != expected or mask.shape[0] not in (1, latents.shape[0]):
        raise ValueError(f"latent: {key} must hold one value per latent frame, shaped (B, "
                         f"{', '.join(map(str, expected))}) (got {tuple(mask.shape)}); the JavisDiT++ Reference nodes "
                         "make it (a pixel mask from Set Latent Noise Mask does not apply)")  # fmt: skip
    per_frame = mask.float().reshape(mask.shape[0], latents.shape[2]).expand(latents.shape[0], -1).clone()
    if not bool(((per_frame >= 0) & (per_frame <= 1)).all()):
        raise ValueError(f"latent: {key} values must be from 0 (kept) to 1 (generated)")
    return LatentCondition(latents=latents.float(), mask=per_frame, written=per_frame < 1)


def latent_conditions(latent: dict[str, Any], normalise: Callable[[torch.Tensor], torch.Tensor]
                      ) -> tuple[LatentCondition | None, LatentCondition | None]:  # fmt: skip
    """The pipeline's (video, audio) conditions from the LATENT's masks, None where it has none. ``normalise``
    maps raw video latents into the transformer's space."""
    video, audio, _ = unpack_latent(latent)
    video_condition = audio_condition = None
    if video is not None and latent.get(VIDEO_MASK) is not None:
        video_condition = _condition(normalise(video), latent[VIDEO_MASK], VIDEO_MASK)
    _, mask_key = audio_keys(latent)
    if audio is not None and latent.get(mask_key) is not None:
        audio_condition = _condition(audio, latent[mask_key], mask_key)
    return video_condition, audio_condition
