"""Reference media for conditioned sampling: the user's frames or sound written into a LATENT with a noise mask.

As ComfyUI's own LTXV image-to-video nodes do, the encoded reference replaces the LATENT's samples at the frames it
covers and the per-frame masks (``latents.py``) say how far the sampler may move them: 0 = kept, 1 = generated.

Frames: picture first (video to audio) or one image (the first frame: image to audio+video). Sound: audio to video.
For extension, give the last frames and sound of a clip as the reference of the next one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from javis_core.codecs.audio import AudioCodec
from javis_core.media_inputs import MediaInput, read_audio_input, read_video_input
from javis_core.pipelines.conditioned import AUDIO_LATENT_SECONDS, clip_audio_latents, clip_pixels
from javis_core.pipelines.sizes import SAMPLE_RATE

from .core import RawVideoDecoder, spatial_stride
from .latents import VIDEO_MASK, audio_keys, frame_mask, unpack_latent


def _check_denoise(denoise: float) -> float:
    if not 0 <= denoise <= 1:
        raise ValueError(f"denoise must be from 0 (the reference kept exactly) to 1 (only a start) (got {denoise})")
    return float(denoise)


def encode_frames(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> raw latents (C, T', h, w) with a ComfyUI VAE (whose encode takes IMAGE in [0, 1]:
    ours or ComfyUI's Wan2.1 VAE), or a diffusers video VAE outside ComfyUI."""
    if hasattr(vae, "first_stage_model"):
        return vae.encode(((pixels + 1) / 2).permute(1, 2, 3, 0))[0].float().cpu()
    return RawVideoDecoder(vae).encode(pixels[None])[0].float().cpu()


def reference_video(latent: dict[str, Any], vae: Any, images: torch.Tensor, denoise: float = 0.0,
                    fps: float = 16.0) -> tuple[dict[str, Any]]:  # fmt: skip
    """Hold the clip's first frames at ``images`` (IMAGE (T, H, W, 3) in [0, 1] at ``fps``; one image = the first
    frame). They are resampled to 16 fps, resized to fill the clip and centre-cropped, trimmed to the clip and to
    whole latent frames (4k+1 frames), and encoded with ``vae``."""
    denoise = _check_denoise(denoise)
    video, _, info = unpack_latent(latent)
    if video is None:
        raise ValueError("latent: these latents hold no video (mode 't2a'); make them in mode 't2av' or 't2v'")
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"images: expected IMAGE frames shaped (T, H, W, 3) (got {tuple(images.shape)})")
    frames = (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if len(frames) > 1:  # one image is the first frame, it has no rate
        frames = read_video_input(MediaInput(frames, rate=fps), "images").frames
    stride = spatial_stride(vae)  # the size the latent grid decodes to (the demo codec's grid is coarser)
    pixels = clip_pixels(frames, info["num_frames"], video.shape[-2] * stride, video.shape[-1] * stride)
    reference = encode_frames(vae, pixels)
    if reference.shape[0] != video.shape[1] or reference.shape[2:] != video.shape[3:]:
        raise ValueError(f"vae: it encodes to {tuple(reference.shape)} per clip, the latent holds "
                         f"{tuple(video.shape[1:])}: connect the VAE the latents were made with")  # fmt: skip
    held = reference.shape[1]
    samples = video.clone()
    samples[:, :, :held] = reference.to(samples)
    mask = frame_mask(latent, VIDEO_MASK, samples)
    mask[:, :, :held] = denoise
    return ({**latent, "samples": samples, VIDEO_MASK: mask},)


def reference_audio(latent: dict[str, Any], audio_vae: AudioCodec, audio: dict[str, Any],
                    denoise: float = 0.0) -> tuple[dict[str, Any]]:  # fmt: skip
    """Hold the clip's sound at ``audio`` (ComfyUI AUDIO, any rate; channels are averaged, the first of a batch is
    used) from its start, for as long as the sound lasts within the clip."""
    denoise = _check_denoise(denoise)
    _, sound, info = unpack_latent(latent)
    if sound is None:
        raise ValueError("latent: these latents hold no audio (mode 't2v'); make them in mode 't2av' or 't2a'")
    waveform = audio["waveform"]
    if waveform.ndim != 3 or waveform.shape[-1] == 0:
        raise ValueError(f"audio: expected a waveform shaped (batch, channels, samples) (got {tuple(waveform.shape)})")
    given = read_audio_input(MediaInput(waveform[0].float().mean(0), rate=audio["sample_rate"]), "audio").audio
    reference, _ = clip_audio_latents(audio_vae, given, info["num_frames"])
    held = min(reference.shape[1], math.floor(len(given) / SAMPLE_RATE / AUDIO_LATENT_SECONDS + 1e-9))
    samples_key, mask_key = audio_keys(latent)
    samples = sound.clone()
    samples[:, :, :held] = reference[:, :held].to(samples)
    mask = frame_mask(latent, mask_key, samples)
    mask[:, :, :held] = denoise
    return ({**latent, samples_key: samples, mask_key: mask},)
