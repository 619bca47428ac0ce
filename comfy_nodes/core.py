"""What the JavisDiT++ nodes do, as plain functions on javis_core and torch (no ComfyUI import here).

The ComfyUI wrapper (``nodes_v3.py``) only turns the specs in ``specs.py`` into V3 node classes and hands
these functions ComfyUI's model folders, progress bar and interruption check; unit tests hand them fakes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan

from javis_core.codecs.audio import AudioCodec, audio_latent_shape, num_audio_samples
from javis_core.loaders.checkpoints import load_transformer
from javis_core.loaders.hub import AUDIOLDM2_FILES, JAVISDIT_FILES, WAN_DIFFUSERS_FILES, WAN_FILES, resolve_weights
from javis_core.loaders.pipeline_loader import default_dtype
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.schedule import make_scheduler
from javis_core.pipelines.sizes import FPS, SAMPLE_RATE, check_num_frames, frames_for_duration, image_size
from javis_core.codecs.text import TextEncoder
from javis_core.utils import parse_dtype
from javis_core.codecs.video import VideoCodec, video_latent_shape

MODEL_FOLDER = "javisdit"  # models/javisdit/ in ComfyUI, registered with folder_paths
MODES = ("t2av", "t2v", "t2a")
DTYPES = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda", "mps")
WAN_TEXT_FILES = [name for name in WAN_FILES if name != "Wan2.1_VAE.pth"]
WAN_VAE_FILES = ["Wan2.1_VAE.pth"]


# ---------------------------------------------------------------------------------------------------- devices
@dataclass
class Placed:
    """A loaded module and where it computes. With ``offload`` it rests on the CPU between node runs."""

    module: torch.nn.Module
    device: torch.device
    offload: bool = False

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        if self.offload:
            self.module.to(self.device)
        try:
            yield self.module
        finally:
            if self.offload:
                self.module.to("cpu")


def resolve_device(name: str) -> torch.device:
    """"auto" is ComfyUI's compute device when running inside ComfyUI, else CUDA if present, else CPU."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {name!r})")
    if name != "auto":
        return torch.device(name)
    try:
        from comfy import model_management

        return model_management.get_torch_device()
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": bf16 on accelerators (the released weights), fp32 on CPU."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {name!r})")
    return default_dtype(device) if name == "auto" else parse_dtype(name)


def place(module: torch.nn.Module, device: torch.device, offload: bool) -> Placed:
    module.eval().requires_grad_(False)
    module.to("cpu" if offload else device)
    return Placed(module, device, offload)


# ---------------------------------------------------------------------------------------------------- model folders
def model_folders() -> list[Path]:
    """ComfyUI's folders registered for ``javisdit`` (models/javisdit and extra_model_paths.yaml entries)."""
    try:
        import folder_paths
    except ImportError:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    except KeyError:
        return []


def local_model_names() -> list[str]:
    """Sub-directories of the model folders: each is a release dir, a Wan/AudioLDM2 dir or a pipeline dir."""
    names = {entry.name for folder in model_folders() if folder.is_dir() for entry in folder.iterdir()
             if entry.is_dir() and not entry.name.startswith(".")}  # fmt: skip
    return sorted(names)


def model_choices(hub_default: str) -> list[str]:
    """Dropdown entries: local model dirs first, then the hub id (downloaded on first use)."""
    return [*local_model_names(), hub_default]


def resolve_source(choice: str, override: str, allow_patterns: list[str], what: str) -> Path:
    """A dropdown entry (model-folder dir name or hub id), or ``override`` (any path or hub id) when given."""
    name = (override or "").strip() or choice
    if not name:
        raise ValueError(f"{what}: choose a model or give path_or_hub_id")
    for folder in model_folders():
        if (folder / name).is_dir():
            return folder / name
    return resolve_weights(os.path.expanduser(name), allow_patterns, what, "path_or_hub_id")


def is_pipeline_dir(path: Path) -> bool:
    return (path / "model_index.json").exists()


# ---------------------------------------------------------------------------------------------------- loaders
def load_model(model: str, path_or_hub_id: str = "", dtype: str = "auto", device: str = "auto",
               offload: bool = False) -> tuple[Placed]:  # fmt: skip
    """JavisDiT++ transformer from a release dir (model/ + lora/, LoRA merged), our saved transformer or
    pipeline dir, a Wan2.1 base dir, or a hub id."""
    source = resolve_source(model, path_or_hub_id, JAVISDIT_FILES, "JavisDiT++ model")
    target = resolve_device(device)
    transformer = load_transformer(source, torch_dtype=resolve_dtype(dtype, target))
    return (place(transformer, target, offload),)


def load_text_encoder(text_encoder: str, path_or_hub_id: str = "", dtype: str = "auto", device: str = "auto",
                      offload: bool = False) -> tuple[Placed]:  # fmt: skip
    """umT5 + tokenizer from Wan2.1 (original or diffusers layout) or a complete pipeline dir."""
    source = resolve_source(text_encoder, path_or_hub_id, WAN_TEXT_FILES, "umT5 text encoder")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if (source / "text_encoder").is_dir():
        encoder = TextEncoder.from_pretrained(source, torch_dtype=torch_dtype)
    else:
        encoder = TextEncoder.from_wan_original(source, torch_dtype=torch_dtype)
    return (place(encoder, target, offload),)


def load_video_vae(vae: str, path_or_hub_id: str = "", device: str = "auto", offload: bool = False,
                   tiling: bool = False) -> tuple[Placed]:  # fmt: skip
    """Wan2.1 video VAE (kept in fp32) from Wan2.1 (either layout) or a complete pipeline dir."""
    patterns = WAN_VAE_FILES + [p for p in WAN_DIFFUSERS_FILES if p.startswith("vae")]
    source = resolve_source(vae, path_or_hub_id, patterns, "Wan2.1 video VAE")
    if (source / "vae").is_dir() or (source / "config.json").exists():
        codec = VideoCodec.from_pretrained(source, torch_dtype=torch.float32)
    else:
        codec = VideoCodec.from_wan_original(source, torch_dtype=torch.float32)
    if tiling:
        codec.enable_tiling()
    return (place(codec, resolve_device(device), offload),)


def load_audio_vae(audio_vae: str, path_or_hub_id: str = "", device: str = "auto",
                   offload: bool = False) -> tuple[Placed]:  # fmt: skip
    """AudioLDM2 mel VAE + HiFi-GAN vocoder (fp32) from cvssp/audioldm2 or a complete pipeline dir."""
    source = resolve_source(audio_vae, path_or_hub_id, AUDIOLDM2_FILES, "AudioLDM2 audio VAE + vocoder")
    vae_dir = source / ("audio_vae" if is_pipeline_dir(source) else "vae")
    if not vae_dir.is_dir() or not (source / "vocoder").is_dir():
        raise ValueError(f"audio_vae: {source} has no {vae_dir.name}/ + vocoder/ (expected cvssp/audioldm2 "
                         f"or a JavisDiT++ pipeline dir)")  # fmt: skip
    codec = AudioCodec(AutoencoderKL.from_pretrained(vae_dir), SpeechT5HifiGan.from_pretrained(source / "vocoder"))
    return (place(codec, resolve_device(device), offload),)


# ---------------------------------------------------------------------------------------------------- text
@dataclass
class Conditioning:
    """umT5 features of the prompt and of the negative prompt (the unconditional side of CFG)."""

    prompt_embeds: torch.Tensor  # (1, L, D), padding zeroed
    prompt_mask: torch.Tensor  # (1, L) long
    negative_embeds: torch.Tensor
    negative_mask: torch.Tensor


def encode_text(text_encoder: Placed, prompt: str, negative_prompt: str = "") -> tuple[Conditioning]:
    if not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    with text_encoder.active() as encoder:
        embeds, mask = encoder.encode([prompt], device="cpu")
        negative, negative_mask = encoder.encode([negative_prompt], device="cpu")
    return (Conditioning(embeds, mask, negative, negative_mask),)


# ---------------------------------------------------------------------------------------------------- latents
@dataclass
class JavisLatents:
    """Video latents (B, 16, T, h, w) and/or audio latents (B, 8, Ta, 16), normalised, float32, CPU."""

    video: torch.Tensor | None
    audio: torch.Tensor | None
    height: int
    width: int
    num_frames: int

    @property
    def batch_size(self) -> int:
        return (self.video if self.video is not None else self.audio).shape[0]


def clip_size(resolution: str, aspect_ratio: str, width: int, height: int, duration: float,
              num_frames: int) -> tuple[int, int, int]:  # fmt: skip
    """(height, width, frames): the official tables, or ``custom`` width/height; ``num_frames`` > 0 wins."""
    if resolution == "custom":
        for name, value in (("width", width), ("height", height)):
            if value % 16 or not 16 <= value <= 1280:
                raise ValueError(f"{name} must be a multiple of 16 from 16 to 1280 (got {value})")
    else:
        height, width = image_size(resolution, aspect_ratio)
    frames = check_num_frames(num_frames) if num_frames else frames_for_duration(duration)
    return height, width, frames


def empty_latents(mode: str, duration: float, resolution: str, aspect_ratio: str, batch_size: int = 1,
                  width: int = 416, height: int = 240, num_frames: int = 0) -> tuple[JavisLatents]:  # fmt: skip
    """Zero latents that fix the clip's size and modalities; the sampler replaces them by seeded noise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if not 1 <= batch_size <= 64:
        raise ValueError(f"batch_size must be from 1 to 64 (got {batch_size})")
    height, width, frames = clip_size(resolution, aspect_ratio, width, height, duration, num_frames)
    video = torch.zeros(batch_size, *video_latent_shape(frames, height, width)) if mode != "t2a" else None
    audio = torch.zeros(batch_size, *audio_latent_shape(frames)) if mode != "t2v" else None
    return (JavisLatents(video, audio, height, width, frames),)


# ---------------------------------------------------------------------------------------------------- sampling
class StepHooks(Protocol):
    """ComfyUI's progress bar and interruption check (fakes in tests)."""

    def progress(self, done: int, total: int) -> None: ...

    def check_interrupt(self) -> None: ...


@torch.no_grad()
def sample(model: Placed, conditioning: Conditioning, latents: JavisLatents, seed: int = 0, steps: int = 50,
           video_cfg: float = 5.0, audio_cfg: float = 5.0, shift: float = 0.0, denoise: float = 1.0,
           scheduler: str = "euler", hooks: StepHooks | None = None) -> tuple[JavisLatents]:  # fmt: skip
    """``JavisDiTPipeline``'s official rectified-flow loop on these latents, from step ``denoise`` of the way.

    ``shift`` 0 = the official resolution/length shift. Noise is drawn on the CPU from ``seed``, video then
    audio as the official sampler does, so a seed gives the same clip on every device. With ``denoise`` < 1 the
    incoming latents are noised to the matching sigma and refined (ComfyUI KSampler's rule).
    """
    if shift < 0:
        raise ValueError(f"shift must be >= 0 (0 = official) (got {shift})")
    want_video, want_audio = latents.video is not None, latents.audio is not None
    mode = "t2av" if want_video and want_audio else ("t2v" if want_video else "t2a")
    model_type = model.module.config.model_type
    if model_type != "t2av" and mode != model_type:
        raise ValueError(f"latents: a {model_type!r} model cannot sample them (make them in mode {model_type!r})")
    batch = latents.batch_size
    total = steps

    def on_step(pipe, step, timestep, tensors):
        if hooks is not None:
            hooks.progress(step + 1, total)
            if step + 1 < total:  # checked before every step
                hooks.check_interrupt()
        return {}

    with model.active() as transformer:
        pipe = JavisDiTPipeline(transformer=transformer, scheduler=make_scheduler(scheduler))
        pipe.set_progress_bar_config(disable=True)
        if hooks is not None:
            hooks.progress(0, total)
            hooks.check_interrupt()
        refine = denoise < 1
        out = pipe(
            mode=mode, height=latents.height, width=latents.width, num_frames=latents.num_frames,
            num_inference_steps=steps, guidance_scale=video_cfg, audio_guidance_scale=audio_cfg,
            shift=shift or None, scheduler=scheduler, denoise=denoise, num_videos_per_prompt=batch,
            generator=torch.Generator("cpu").manual_seed(seed),
            latents=latents.video if refine else None, audio_latents=latents.audio if refine else None,
            prompt_embeds=conditioning.prompt_embeds[:1], prompt_attention_mask=conditioning.prompt_mask[:1],
            negative_prompt_embeds=conditioning.negative_embeds[:1],
            negative_prompt_attention_mask=conditioning.negative_mask[:1],
            output_type="latent", callback_on_step_end=on_step,
        )  # fmt: skip
    video = None if out.frames is None else out.frames.float().cpu()
    audio = None if out.audio is None else out.audio.float().cpu()
    return (JavisLatents(video, audio, latents.height, latents.width, latents.num_frames),)


# ---------------------------------------------------------------------------------------------------- decoding
def decode_video(video_vae: Placed, latents: JavisLatents) -> tuple[torch.Tensor, float]:
    """Video latents -> ComfyUI IMAGE (B*T, H, W, 3) float32 in [0, 1] (clips one after another) and fps."""
    if latents.video is None:
        raise ValueError("latents: these latents hold no video (made with mode 't2a')")
    with video_vae.active() as codec:
        frames = (codec.decode(latents.video.to(codec.device)) + 1) / 2  # (B, 3, T, H, W)
    images = frames.permute(0, 2, 3, 4, 1).flatten(0, 1).clamp(0, 1).float().cpu().contiguous()
    return images, float(FPS)


def decode_audio(audio_vae: Placed, latents: JavisLatents) -> tuple[dict[str, Any]]:
    """Audio latents -> ComfyUI AUDIO {"waveform": (B, 1, N) float32 in [-1, 1], "sample_rate": 16000}.

    N matches the clip's frames exactly (num_frames / 16 s), so a batch concatenated by SaveVideo stays in sync.
    """
    if latents.audio is None:
        raise ValueError("latents: these latents hold no audio (made with mode 't2v')")
    with audio_vae.active() as codec:
        waveform = codec.decode(latents.audio, num_audio_samples(latents.num_frames))
    return ({"waveform": waveform.clamp(-1, 1).float().unsqueeze(1).contiguous(), "sample_rate": SAMPLE_RATE},)


# ---------------------------------------------------------------------------------------------------- comfy hooks
def comfy_step_hooks() -> StepHooks:
    """ComfyUI's ProgressBar and interruption check (imported only when running inside ComfyUI)."""
    import comfy.model_management
    import comfy.utils

    class _ComfyHooks:
        bar: Any = None

        def progress(self, done: int, total: int) -> None:
            if self.bar is None:
                self.bar = comfy.utils.ProgressBar(total)
            self.bar.update_absolute(done, total)

        def check_interrupt(self) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()

    return _ComfyHooks()
