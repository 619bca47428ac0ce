"""Assembling a ready-to-run `JavisDiTPipeline` from the published checkpoints or a saved pipeline dir.

Sources (each a hub id or a local directory):
* ``model``: ``demo`` (the offline demo model shipped in ``assets/demo_model``, or any demo model dir; the
  other two sources are then not needed), the JavisDiT++ release (JavisVerse/JavisDiT-v1.0-jav: ``model/`` + ``lora/``), any transformer
  layout ``load_transformer`` reads, or a complete pipeline dir with ``model_index.json`` (then the other two
  sources are not needed);
* ``wan``: Wan2.1-T2V-1.3B for the umT5 text encoder, its tokenizer and the video VAE, original layout
  (``models_t5_umt5-xxl-enc-bf16.pth``, ``google/umt5-xxl/``, ``Wan2.1_VAE.pth``) or diffusers layout;
* ``audioldm2``: cvssp/audioldm2 (only ``vae/`` and ``vocoder/`` are used).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan

from .checkpoints import load_transformer
from .demo_codecs import saved_codec_class
from .hub import (
    AUDIOLDM2_FILES,
    AUDIOLDM2_REPO,
    JAVISDIT_FILES,
    JAVISDIT_REPO,
    WAN_DIFFUSERS_FILES,
    WAN_FILES,
    WAN_REPO,
    WeightsNotFoundError,
    resolve_weights,
)
from .pipeline import JavisDiTPipeline
from .schedule import make_scheduler
from .text_encoder import TextEncoder
from .utils import parse_dtype
from .video_codec import VideoCodec


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on accelerators (the released weights are bf16), fp32 on CPU where bf16 matmuls are slow."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def _require(path: Path, names: list[str], what: str, flag: str) -> None:
    absent = [name for name in names if not (path / name).exists()]
    if absent:
        raise WeightsNotFoundError(f"{what}: {path} lacks {absent}; pass a complete directory with {flag}")


def load_wan_components(wan: str | Path, torch_dtype: torch.dtype) -> tuple[TextEncoder, VideoCodec]:
    """Text encoder + tokenizer and video VAE from Wan2.1 in either layout (VAE kept in fp32, spec 1.6)."""
    local = Path(wan)
    diffusers_layout = (local / "text_encoder").is_dir()
    if not local.exists():
        local = resolve_weights(wan, WAN_FILES + WAN_DIFFUSERS_FILES, "Wan2.1 text encoder and video VAE", "--wan")
        diffusers_layout = (local / "text_encoder").is_dir()
    if diffusers_layout:
        _require(local, ["text_encoder", "tokenizer", "vae"], "Wan2.1 (diffusers layout)", "--wan")
        text = TextEncoder.from_pretrained(local, torch_dtype=torch_dtype)
        video = VideoCodec.from_pretrained(local, torch_dtype=torch.float32)
    else:
        _require(local, ["models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl", "Wan2.1_VAE.pth"], "Wan2.1", "--wan")
        text = TextEncoder.from_wan_original(local, torch_dtype=torch_dtype)
        video = VideoCodec.from_wan_original(local, torch_dtype=torch.float32)
    return text, video


def load_audioldm2_components(audioldm2: str | Path) -> tuple[AutoencoderKL, SpeechT5HifiGan]:
    """AudioLDM2's mel VAE and HiFi-GAN vocoder (small: kept in fp32); or the demo model's PCA codec and
    Griffin-Lim vocoder when the saved configs name them."""
    local = Path(audioldm2)
    if not local.exists():
        local = resolve_weights(audioldm2, AUDIOLDM2_FILES, "AudioLDM2 audio VAE and vocoder", "--audioldm2")
    _require(local, ["vae", "vocoder"], "AudioLDM2", "--audioldm2")
    vae_class = saved_codec_class(local / "vae", AutoencoderKL)
    vocoder_class = saved_codec_class(local / "vocoder", SpeechT5HifiGan)
    return vae_class.from_pretrained(local / "vae"), vocoder_class.from_pretrained(local / "vocoder")


def load_pipeline(
    model: str | Path = JAVISDIT_REPO,
    wan: str | Path = WAN_REPO,
    audioldm2: str | Path = AUDIOLDM2_REPO,
    device: str | torch.device = "cpu",
    torch_dtype: str | torch.dtype | None = None,
    offload: bool = False,
    vae_tiling: bool = False,
) -> JavisDiTPipeline:
    """A pipeline on ``device`` (or with model CPU offload onto it), transformer and text encoder in ``torch_dtype``."""
    from .demo_model import DEMO_DIR, DEMO_NAME, demo_available, load_demo_pipeline

    model_path = DEMO_DIR if str(model) == DEMO_NAME else Path(model)
    if demo_available(model_path):  # the small offline model: fp32, its own text encoder and codecs
        return load_demo_pipeline(model_path, device)
    dtype = parse_dtype(torch_dtype) if torch_dtype is not None else default_dtype(device)
    if (model_path / "model_index.json").exists():
        dtypes = {"transformer": dtype, "text_encoder": dtype, "default": torch.float32}
        pipe = JavisDiTPipeline.from_pretrained(model_path, dtype=dtypes)
    else:
        if not model_path.exists():
            model_path = resolve_weights(model, JAVISDIT_FILES, "JavisDiT++ weights", "--model")
        transformer = load_transformer(model_path, torch_dtype=dtype)
        text, video = load_wan_components(wan, dtype)
        audio_vae, vocoder = load_audioldm2_components(audioldm2)
        pipe = JavisDiTPipeline(
            transformer=transformer, scheduler=make_scheduler("euler"), text_encoder=text.model,
            tokenizer=text.tokenizer, vae=video.vae, audio_vae=audio_vae, vocoder=vocoder,
        )  # fmt: skip
    if vae_tiling and pipe.vae is not None:
        pipe.vae.enable_tiling()
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
