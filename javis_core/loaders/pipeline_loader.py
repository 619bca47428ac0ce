"""Assembling a ready-to-run `JavisDiTPipeline` from the published checkpoints or a saved pipeline dir.

Sources (each a hub id or a local directory):
* ``model``: the JavisDiT++ release (JavisVerse/JavisDiT-v1.0-jav: ``model/`` + ``lora/``), any transformer
  layout ``load_transformer`` reads, or a complete pipeline dir with ``model_index.json`` (then the other two
  sources are not needed; ``demo`` names the offline demo pipeline shipped in ``assets/demo_model``);
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
from ..pipelines.pipeline_javisdit import JavisDiTPipeline
from ..pipelines.schedule import make_scheduler
from ..codecs.text import TextEncoder
from ..pipelines.speed import compile_transformer, set_attention_backend
from ..utils import import_named_modules, load_component, parse_dtype
from ..codecs.video import VideoCodec

DEMO_NAME = "demo"  # --model demo in the CLI and the app
DEMO_DIR = Path(__file__).resolve().parents[2] / "assets" / "demo_model"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on accelerators (the released weights are bf16), fp32 on CPU where bf16 matmuls are slow."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def _require(path: Path, names: list[str], what: str, flag: str) -> None:
    absent = [name for name in names if not (path / name).exists()]
    if absent:
        raise WeightsNotFoundError(f"{what}: {path} lacks {absent}; pass a complete directory with {flag}")


def load_wan_components(wan: str | Path, torch_dtype: torch.dtype) -> tuple[TextEncoder, VideoCodec]:
    """Text encoder + tokenizer and video VAE from Wan2.1 in either layout (VAE kept in fp32, docs/official.md §1.6)."""
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
    """AudioLDM2's mel VAE and HiFi-GAN vocoder (small: kept in fp32), or what the dir's model_index.json names."""
    local = Path(audioldm2)
    if not local.exists():
        local = resolve_weights(audioldm2, AUDIOLDM2_FILES, "AudioLDM2 audio VAE and vocoder", "--audioldm2")
    _require(local, ["vae", "vocoder"], "AudioLDM2", "--audioldm2")
    return load_component(local, "vae", AutoencoderKL), load_component(local, "vocoder", SpeechT5HifiGan)


def load_pipeline(
    model: str | Path = JAVISDIT_REPO,
    wan: str | Path = WAN_REPO,
    audioldm2: str | Path = AUDIOLDM2_REPO,
    device: str | torch.device = "cpu",
    torch_dtype: str | torch.dtype | None = None,
    offload: bool = False,
    vae_tiling: bool = False,
    compile: bool = False,
    attention_backend: str | None = None,
    group_offload: bool = False,
    fp8_storage: bool = False,
) -> JavisDiTPipeline:
    """A pipeline on ``device`` (or with model CPU offload onto it), transformer and text encoder in ``torch_dtype``.

    Speed and memory options (all keep the sampler; see README "Speed and memory"):
    ``compile``: regional ``torch.compile`` of the transformer blocks (the first call of a size compiles);
    ``attention_backend``: one of diffusers' attention backends ("native", "cudnn", "flash", "sage", ...);
    ``group_offload``: the transformer's blocks stay on the CPU and are streamed to ``device`` one at a time
    (diffusers' group offloading, with CUDA streams on CUDA), the rest of the pipeline as with ``offload``;
    ``fp8_storage``: transformer weights stored in float8 (e4m3) and cast to ``torch_dtype`` layer by layer.
    """
    model_path = DEMO_DIR if str(model) == DEMO_NAME else Path(model)
    dtype = parse_dtype(torch_dtype) if torch_dtype is not None else default_dtype(device)
    if (model_path / "model_index.json").exists():
        dtypes = {"transformer": dtype, "text_encoder": dtype, "default": torch.float32}
        import_named_modules(model_path)
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
    configure_speed(pipe, device, offload, compile, attention_backend, group_offload, fp8_storage)
    return pipe


def configure_speed(pipe: JavisDiTPipeline, device: str | torch.device, offload: bool = False, compile: bool = False,
                    attention_backend: str | None = None, group_offload: bool = False,
                    fp8_storage: bool = False) -> None:  # fmt: skip
    """Place the pipeline and apply the speed/memory options of ``load_pipeline``."""
    transformer = pipe.transformer
    if attention_backend is not None:
        set_attention_backend(transformer, attention_backend)
    if fp8_storage:
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=transformer.dtype)
    if group_offload:  # every component's blocks are moved to the device one group at a time
        device = torch.device(device)
        pipe.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                                  use_stream=device.type == "cuda")  # fmt: skip
    elif offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if compile:
        compile_transformer(transformer)
