"""What the JavisDiT++ nodes do, as plain functions on javis_core and torch (no ComfyUI import here).

Values crossing node boundaries use ComfyUI's own formats, so native nodes connect to ours:
* CONDITIONING: ``[[features (1, L, D) with padding zeroed, {"attention_mask": (1, L)}]]``, what ComfyUI's
  ``CLIPTextEncode`` gives for a Wan umT5 (its padding is zeroed too; the mask is then read off the zeros);
* LATENT: ``{"samples": video latents (B, 16, T, h, w) in the video VAE's own (raw) space}``, which the native
  ``VAEDecode`` decodes with ComfyUI's Wan VAE, plus ``"audio_samples"`` (AudioLDM2 latents, JavisDiT++'s
  scaling) and ``"javisdit"`` (the clip's size). Sound only: ``"samples"`` holds the audio, ``"type": "audio"``.
The ComfyUI wrapper (``nodes_v3.py``/``comfy_types.py``) puts the loaded modules under ComfyUI's model
management (ModelPatcher, CLIP, VAE) and hands these functions the loaded modules; unit tests call them directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from diffusers import AutoencoderKL, AutoencoderKLWan
from transformers import AutoModel, AutoTokenizer, SpeechT5HifiGan

from javis_core.codecs.audio import AudioCodec, audio_latent_shape, num_audio_samples
from javis_core.loaders.checkpoints import load_transformer
from javis_core.demo.model import DEMO_DIR, DEMO_NAME, demo_available
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.requests import MODES  # noqa: F401  (the nodes' mode options)
from javis_core.pipelines.requests import check_mode, has_audio, has_video, mode_for, resolve_size
from javis_core.pipelines.schedule import make_scheduler
from javis_core.pipelines.speed import PRESETS, compile_transformer
from javis_core.loaders.single_file import load_single_file, single_file_config
from javis_core.pipelines.sizes import ASPECT_PRESETS, ASPECT_RATIOS, SAMPLE_RATE
from javis_core.codecs.text import TextEncoder
from javis_core.models.transformer import JavisDiTTransformer3DModel
from javis_core.utils import load_component
from javis_core.codecs.video import WAN_LATENTS_MEAN, WAN_LATENTS_STD, VideoCodec, video_latent_shape

from .latents import AUDIO_SAMPLES, LATENT_INFO, latent_conditions, make_latent, unpack_latent  # noqa: F401

MODEL_FOLDER = "javisdit"  # models/javisdit/ in ComfyUI, registered with folder_paths
PRESET_CHOICES = ("custom", *PRESETS)  # custom: the steps and scheduler widgets


def _width_height(official: str) -> str:
    height, width = official.split(":")
    return f"{width}:{height}"


# width:height as every video tool writes it ("16:9" is landscape); the official H:W strings map onto these
ASPECT_CHOICES = tuple(dict.fromkeys(["16:9", "9:16", "1:1", *(_width_height(r) for r in ASPECT_RATIOS)]))


def official_aspect(aspect_ratio: str) -> str:
    """A width:height string (or landscape/portrait/square) -> the official height:width table key."""
    if aspect_ratio in ASPECT_PRESETS:
        return ASPECT_PRESETS[aspect_ratio]
    if aspect_ratio not in ASPECT_CHOICES:
        choices = ", ".join(ASPECT_CHOICES)
        raise ValueError(f"aspect_ratio must be width:height, one of {choices} (got {aspect_ratio!r})")
    return _width_height(aspect_ratio)


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


def model_choices() -> list[str]:
    """Dropdown entries: the shipped offline demo model, then the model-folder dirs (nothing is downloaded)."""
    return [DEMO_NAME, *(name for name in local_model_names() if name != DEMO_NAME)]


def single_file_names() -> list[str]:
    """JavisDiT++ single files in ComfyUI's ``diffusion_models/`` (told apart from Wan2.1 files by their header)."""
    try:
        import folder_paths
    except ImportError:
        return []
    names = folder_paths.get_filename_list("diffusion_models")
    return [name for name in names if name.endswith(".safetensors")
            and single_file_config(folder_paths.get_full_path("diffusion_models", name)) is not None]  # fmt: skip


def transformer_choices() -> list[str]:
    """The Model Loader's dropdown: the demo, the model-folder dirs, then single files in diffusion_models/."""
    return [*model_choices(), *single_file_names()]


def resolve_source(name: str, what: str) -> Path:
    """A dropdown entry (``demo`` or a model-folder dir name), or an existing local path."""
    if name == DEMO_NAME:
        return DEMO_DIR
    for folder in model_folders():
        if name and (folder / name).is_dir():
            return folder / name
    if name.endswith(".safetensors"):
        try:
            import folder_paths

            found = folder_paths.get_full_path("diffusion_models", name)
        except ImportError:
            found = None
        if found:
            return Path(found)
    if name and Path(name).expanduser().exists():
        return Path(name).expanduser()
    raise ValueError(f"{what}: no folder {name!r} in ComfyUI/models/{MODEL_FOLDER}/ (put the weights there; "
                     f"nothing is downloaded during a run)")  # fmt: skip


def is_pipeline_dir(path: Path) -> bool:
    return (path / "model_index.json").exists()


def _comfy_dtype(kind: str, default: torch.dtype) -> torch.dtype:
    """The weight dtype ComfyUI picks for its device (``unet_dtype``/``text_encoder_dtype``), else ``default``."""
    try:
        from comfy import model_management
    except ImportError:
        return default
    if kind == "unet":
        return model_management.unet_dtype(supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
    return model_management.text_encoder_dtype(model_management.text_encoder_device())


# ---------------------------------------------------------------------------------------------------- loaders
class JavisDiTModel(torch.nn.Module):
    """The transformer as ComfyUI's model management sees it: weights under ``diffusion_model.`` (the key prefix
    ComfyUI's LoRA loaders match) and the statistics of the video VAE it was trained with, which turn LATENT
    samples (raw VAE space) into the normalised latents it denoises."""

    def __init__(self, transformer: JavisDiTTransformer3DModel, latents_mean: list[float], latents_std: list[float],
                 preview_factors: tuple[list[list[float]], list[float]] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.diffusion_model = transformer.eval().requires_grad_(False)
        self.preview_factors = preview_factors  # latent -> RGB for live previews; None: ComfyUI's Wan2.1 ones
        self.register_buffer("latents_mean", torch.tensor(latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(latents_std).view(1, -1, 1, 1, 1), persistent=False)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw.float() - self.latents_mean.float().cpu()) / self.latents_std.float().cpu()

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.float() * self.latents_std.float().cpu() + self.latents_mean.float().cpu()


def video_latent_stats(source: Path) -> tuple[list[float], list[float]]:
    """latents_mean/std of the video VAE saved beside a transformer (pipeline or demo dir), else Wan2.1's."""
    config = source / "vae" / "config.json"
    if config.exists():
        saved = json.loads(config.read_text())
        if "latents_mean" in saved and "latents_std" in saved:
            return saved["latents_mean"], saved["latents_std"]
    return WAN_LATENTS_MEAN, WAN_LATENTS_STD


def load_model(model: str, compile: bool = False) -> tuple[JavisDiTModel]:
    """JavisDiT++ transformer: the demo model, a release dir (model/ + lora/, LoRA merged), a saved transformer
    or pipeline dir, a Wan2.1 base dir, or a single file in diffusion_models/ (``javis_core.convert --out
    NAME.safetensors``). The demo runs in fp32; others in the dtype ComfyUI picks. ``compile``: regional
    torch.compile of the blocks (exact; the first run of a size compiles)."""
    source = resolve_source(model, "model")
    dtype = torch.float32 if demo_available(source) else _comfy_dtype("unet", torch.float32)
    if source.is_file():  # a single file from diffusion_models/ (its video VAE is Wan2.1's)
        wrapped = JavisDiTModel(load_single_file(source, dtype), WAN_LATENTS_MEAN, WAN_LATENTS_STD)
    else:
        preview = None
        if demo_available(source):  # ComfyUI has no Latent2RGB table for the demo codec
            preview = latent_rgb_factors(load_component(source, "vae", AutoencoderKLWan))
        wrapped = JavisDiTModel(load_transformer(source, torch_dtype=dtype), *video_latent_stats(source), preview)
    if compile:
        compile_transformer(wrapped.diffusion_model)
    return (wrapped,)


@torch.no_grad()
def latent_rgb_factors(vae: torch.nn.Module, samples: int = 64) -> tuple[list[list[float]], list[float]]:
    """Least-squares (C, 3) factors and bias from normalised latents to the mean colour (in [-1, 1]) of the pixels
    each decodes to: ComfyUI's Latent2RGB preview for a video VAE it has no table for (the demo codec)."""
    channels, stride = int(vae.config.z_dim), spatial_stride(vae)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    latents = torch.randn(samples, channels, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    frames = vae.decode(latents * std + mean).sample.float()[:, :, 0]  # (N, 3, 2 stride, 2 stride)
    colours = torch.nn.functional.avg_pool2d(frames, stride).permute(0, 2, 3, 1).reshape(-1, 3)
    inputs = torch.cat([latents[:, :, 0].permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(len(colours), 1)], 1)
    solution = torch.linalg.lstsq(inputs.double(), colours.double()).solution.float()
    return solution[:channels].tolist(), solution[channels].tolist()


def load_text_encoder(text_encoder: str) -> tuple[TextEncoder]:
    """The demo's MiniLM, or umT5 + tokenizer from a pipeline dir / Wan2.1 dir (original or diffusers layout).
    A Wan user's ``text_encoders/umt5_xxl_*.safetensors`` loads with ComfyUI's own CLIPLoader (type wan)."""
    source = resolve_source(text_encoder, "text_encoder")
    if demo_available(source):
        return (TextEncoder(load_component(source, "text_encoder", AutoModel), AutoTokenizer.from_pretrained(
            str(source / "tokenizer"))),)  # fmt: skip
    dtype = _comfy_dtype("text", torch.float32)
    if (source / "text_encoder").is_dir():
        return (TextEncoder.from_pretrained(source, torch_dtype=dtype),)
    if (source / "models_t5_umt5-xxl-enc-bf16.pth").exists():
        return (TextEncoder.from_wan_original(source, torch_dtype=dtype),)
    raise ValueError(f"text_encoder: {source} holds no text encoder (expected 'demo', a pipeline dir or "
                     f"Wan2.1-T2V-1.3B)")  # fmt: skip


def load_video_vae(vae: str) -> tuple[torch.nn.Module]:
    """The diffusers video VAE of the demo model, a pipeline dir or Wan2.1 (kept in fp32). A Wan user's
    ``vae/wan_2.1_vae.safetensors`` loads with ComfyUI's own VAELoader."""
    source = resolve_source(vae, "vae")
    if (source / "vae").is_dir():
        model = load_component(source, "vae", AutoencoderKLWan)
    elif (source / "Wan2.1_VAE.pth").exists():
        model = VideoCodec.from_wan_original(source, torch_dtype=torch.float32).vae
    else:
        raise ValueError(f"vae: {source} holds no video VAE (expected 'demo', a pipeline dir or Wan2.1-T2V-1.3B)")
    return (model.float().eval().requires_grad_(False),)


def load_audio_vae(audio_vae: str) -> tuple[AudioCodec]:
    """AudioLDM2's mel VAE + HiFi-GAN vocoder (fp32) from cvssp/audioldm2 (``vae/`` + ``vocoder/``), a pipeline
    dir, or the demo model's PCA mel codec + Griffin-Lim vocoder."""
    source = resolve_source(audio_vae, "audio_vae")
    vae_dir = source / ("audio_vae" if is_pipeline_dir(source) or demo_available(source) else "vae")
    if not vae_dir.is_dir() or not (source / "vocoder").is_dir():
        raise ValueError(f"audio_vae: {source} has no {vae_dir.name}/ + vocoder/ (expected cvssp/audioldm2, "
                         f"a JavisDiT++ pipeline dir or 'demo')")  # fmt: skip
    vae = load_component(source, vae_dir.name, AutoencoderKL)
    vocoder = load_component(source, "vocoder", SpeechT5HifiGan)
    return (AudioCodec(vae, vocoder).float().eval().requires_grad_(False),)


# ---------------------------------------------------------------------------------------------------- text
def encode_text(text_encoder: TextEncoder, text: str) -> list[list[Any]]:
    """CONDITIONING of one prompt, in the layout of ComfyUI's umT5 (padding zeroed) plus its attention mask."""
    embeds, mask = text_encoder.encode([text], device=text_encoder.device)
    return [[embeds.float().cpu(), {"attention_mask": mask.cpu()}]]


def conditioning_features(conditioning: list, what: str, text_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (1, L, D), mask (1, L)) of a CONDITIONING: its attention mask, else the non-zero positions
    (ComfyUI's umT5 zeroes the padding and gives no mask)."""
    if not conditioning:
        raise ValueError(f"{what}: the conditioning is empty")
    features, extra = conditioning[0][0], conditioning[0][1]
    if features.ndim != 3 or features.shape[-1] != text_dim:
        raise ValueError(f"{what}: text features of width {features.shape[-1]}, the model reads {text_dim} "
                         f"(umT5-XXL for JavisDiT++, the 'demo' text encoder for the demo model)")  # fmt: skip
    mask = extra.get("attention_mask")
    if mask is None:
        mask = features[:1].abs().amax(-1) > 0
    return features[:1].float(), mask[:1].long().to(features.device)


# ---------------------------------------------------------------------------------------------------- latents
def spatial_stride(vae: Any) -> int:
    """Pixels per latent of a ComfyUI VAE (``spacial_compression_decode``) or a diffusers video VAE."""
    if hasattr(vae, "spacial_compression_decode"):
        return int(vae.spacial_compression_decode())
    return int(getattr(vae.config, "scale_factor_spatial", 8))


def latents_for(mode: str, height: int, width: int, num_frames: int, batch_size: int = 1,
                stride: int = 8, channels: int = 16) -> dict[str, Any]:  # fmt: skip
    """Zero LATENT for an exact size (the Empty Latents node picks the size from the official tables)."""
    check_mode(mode)
    if not 1 <= batch_size <= 64:
        raise ValueError(f"batch_size must be from 1 to 64 (got {batch_size})")
    video_shape = video_latent_shape(num_frames, height, width, channels, stride)
    video = torch.zeros(batch_size, *video_shape) if has_video(mode) else None
    audio = torch.zeros(batch_size, *audio_latent_shape(num_frames)) if has_audio(mode) else None
    return make_latent(video, audio, height, width, num_frames)


def empty_latents(vae: Any, mode: str, duration: float, resolution: str, aspect_ratio: str,
                  batch_size: int = 1) -> tuple[dict[str, Any]]:  # fmt: skip
    """Zero latents that fix the clip's modalities, length, size and batch; the sampler replaces them by noise.
    The VAE sets the latent grid (Wan2.1: 8 pixels a latent; the demo codec: 32)."""
    height, width, frames = resolve_size(resolution, official_aspect(aspect_ratio), duration=duration)
    return (latents_for(mode, height, width, frames, batch_size, spatial_stride(vae)),)


# ---------------------------------------------------------------------------------------------------- sampling
class StepHooks(Protocol):
    """ComfyUI's progress bar and interruption check (fakes in tests)."""

    def progress(self, done: int, total: int, preview: torch.Tensor | None = None) -> None: ...

    def check_interrupt(self) -> None: ...


@torch.no_grad()
def sample(model: JavisDiTModel, positive: list, negative: list, latent: dict[str, Any], seed: int = 0,
           steps: int = 50, video_cfg: float = 5.0, audio_cfg: float = 5.0, shift: float = 0.0, denoise: float = 1.0,
           scheduler: str = "euler", preset: str = "custom", hooks: StepHooks | None = None,
           ) -> tuple[dict[str, Any]]:  # fmt: skip
    """``JavisDiTPipeline``'s official rectified-flow loop on these latents, from step ``denoise`` of the way.

    ``shift`` 0 = the official resolution/length shift. Noise is drawn on the CPU from ``seed``, video then
    audio as the official sampler does, so a seed gives the same clip on every device. With ``denoise`` < 1 the
    incoming latents are noised to the matching sigma and refined (ComfyUI KSampler's rule). Frames with a
    reference mask (``latents.py``, set by the Reference nodes) are held at the latent's values as the mask says.
    ``hooks`` get each step's clean-video estimate for ComfyUI's live preview.
    """
    if not isinstance(model, JavisDiTModel):
        raise ValueError(f"model: connect a JavisDiT++ Model Loader (got {type(model).__name__})")
    if shift < 0:
        raise ValueError(f"shift must be >= 0 (0 = official) (got {shift})")
    video, audio, info = unpack_latent(latent)
    transformer = model.diffusion_model
    mode = mode_for(video is not None, audio is not None)
    model_type = transformer.config.model_type
    if model_type != "t2av" and mode != model_type:
        raise ValueError(f"latent: a {model_type!r} model cannot sample them (make them in mode {model_type!r})")
    text_dim = transformer.config.text_dim
    video_condition, audio_condition = latent_conditions(latent, model.normalise)
    embeds, mask = conditioning_features(positive, "positive", text_dim)
    negative_embeds, negative_mask = conditioning_features(negative, "negative", text_dim)
    batch = (video if video is not None else audio).shape[0]
    if preset != "custom":  # the preset's steps and scheduler (and cache) replace the widgets'
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESET_CHOICES)} (got {preset!r})")
        steps, scheduler = PRESETS[preset].num_inference_steps, PRESETS[preset].scheduler
    total = steps

    def on_step(pipe, step, timestep, tensors):
        if hooks is not None:
            hooks.progress(step + 1, total, preview=tensors["denoised"])
            if step + 1 < total:  # checked before every step
                hooks.check_interrupt()
        return {}

    pipe = JavisDiTPipeline(transformer=transformer, scheduler=make_scheduler(scheduler))
    pipe.set_progress_bar_config(disable=True)
    if hooks is not None:
        hooks.progress(0, total)
        hooks.check_interrupt()
    refine = denoise < 1
    generator = torch.Generator("cpu").manual_seed(seed)
    if refine:
        start_video = None if video is None else model.normalise(video)
        start_audio = audio
    else:  # the seed's noise in the LATENT's own grid (the pipeline has no VAE here to size it)
        start_video = None if video is None else torch.randn(video.shape, generator=generator)
        start_audio = None if audio is None else torch.randn(audio.shape, generator=generator)
    out = pipe(
        mode=mode, height=info["height"], width=info["width"], num_frames=info["num_frames"],
        num_inference_steps=steps, guidance_scale=video_cfg, audio_guidance_scale=audio_cfg,
        shift=shift or None, scheduler=scheduler, denoise=denoise, num_videos_per_prompt=batch,
        preset=None if preset == "custom" else preset,
        generator=generator, latents=start_video, audio_latents=start_audio,
        prompt_embeds=embeds, prompt_attention_mask=mask,
        negative_prompt_embeds=negative_embeds, negative_prompt_attention_mask=negative_mask,
        video_condition=video_condition, audio_condition=audio_condition,
        output_type="latent", callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["denoised"],
    )  # fmt: skip
    video_out = None if out.frames is None else model.denormalise(out.frames.float().cpu())
    audio_out = None if out.audio is None else out.audio.float().cpu()
    return (make_latent(video_out, audio_out, info["height"], info["width"], info["num_frames"]),)


# ---------------------------------------------------------------------------------------------------- decoding
class RawVideoDecoder(torch.nn.Module):
    """A diffusers video VAE (Wan2.1's or the demo's) behind the calls ComfyUI's VAE object makes on its
    ``first_stage_model``: raw latents (B, C, T, h, w) -> frames (B, 3, 4T-3, H, W) in [-1, 1], and back."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.vae.dtype)).sample.float().clamp(-1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode().float()

    def decode_steps(self) -> Iterator[torch.nn.Module]:
        """The module a diffusers Wan VAE runs once per latent frame (where progress and Cancel are checked)."""
        decoder = getattr(self.vae, "decoder", None)
        if isinstance(decoder, torch.nn.Module):
            yield decoder


def decode_audio(audio_vae: AudioCodec, latent: dict[str, Any]) -> tuple[dict[str, Any]]:
    """Audio latents -> ComfyUI AUDIO {"waveform": (B, 1, N) float32 in [-1, 1], "sample_rate": 16000}.

    N matches the clip's frames exactly (num_frames / 16 s), so a batch concatenated by SaveVideo stays in sync.
    """
    _, audio, info = unpack_latent(latent)
    if audio is None:
        raise ValueError("latent: these latents hold no audio (made with mode 't2v')")
    waveform = audio_vae.decode(audio, num_audio_samples(info["num_frames"]))
    return ({"waveform": waveform.clamp(-1, 1).float().unsqueeze(1).contiguous(), "sample_rate": SAMPLE_RATE},)
