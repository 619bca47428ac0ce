"""The nodes' schemas as plain data: inputs, outputs and the ``core`` function each node runs.

``nodes_v3.py`` turns every ``NodeSpec`` into a ComfyUI V3 ``io.ComfyNode``; tests read the specs directly.
Socket types are ComfyUI's own (MODEL, CLIP, VAE, CONDITIONING, LATENT, AUDIO), so native nodes (CLIPLoader,
CLIPTextEncode, VAELoader, VAEDecode, LoRA loaders, CreateVideo, SaveVideo) connect to ours; only the AudioLDM2
VAE + vocoder, which ComfyUI has no loader for, has a type of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from javis_core.demo.model import DEMO_NAME
from javis_core.pipelines.schedule import SCHEDULERS
from javis_core.pipelines.sizes import DURATIONS, RESOLUTIONS

from . import core, reference

CATEGORY = "JavisDiT++"
MODEL, CLIP, VAE, CONDITIONING, LATENT = "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT"
AUDIO_VAE = "JAVISDIT_AUDIO_VAE"  # AudioLDM2 mel VAE + vocoder: ComfyUI has no type for it
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
MAX_SEED = 2**64 - 1  # KSampler's


@dataclass(frozen=True)
class Param:
    """One input. ``type`` is a widget kind (INT, FLOAT, STRING, BOOLEAN, COMBO) or a socket type."""

    id: str
    type: str
    default: Any = None
    tooltip: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: Callable[[], list[str]] | tuple[str, ...] = ()
    multiline: bool = False
    optional: bool = False
    control_after_generate: bool = False

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGETS

    def choices(self) -> list[str]:
        """COMBO entries; a callable is asked anew each time ComfyUI builds the schema (model folders change)."""
        return list(self.options()) if callable(self.options) else list(self.options)


@dataclass(frozen=True)
class Output:
    type: str
    name: str
    tooltip: str = ""


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str
    run: Callable[..., tuple]
    inputs: tuple[Param, ...]
    outputs: tuple[Output, ...]
    step_hooks: bool = False  # run gets ``hooks=`` (ComfyUI progress bar + interruption check)
    category: str = field(default=CATEGORY)

    def defaults(self) -> dict[str, Any]:
        return {p.id: p.default for p in self.inputs if p.is_widget}


def _source(input_id: str, options=core.model_choices, where: str = "") -> Param:
    """A dropdown of the shipped demo model and the sub-dirs of ComfyUI/models/javisdit/."""
    return Param(input_id, "COMBO", default=DEMO_NAME, options=options,
                 tooltip="'demo': the small offline model shipped with the pack; else a folder in "
                         f"ComfyUI/models/javisdit/{where}")  # fmt: skip


MODEL_LOADER = NodeSpec(
    "JavisDiTModelLoader", "JavisDiT++ Model Loader",
    "Loads the JavisDiT++ transformer (the demo model, the official release dir: model/ + lora/ with the LoRA "
    "merged, a saved transformer or pipeline dir, or a single file in diffusion_models/ written by "
    "javis_core.convert) under ComfyUI's model management. ComfyUI's own checkpoint "
    "loaders would take it for plain Wan2.1.",
    core.load_model,
    (_source("model", core.transformer_choices, " or a single file in diffusion_models/"),
     Param("compile", "BOOLEAN", default=False,
           tooltip="regional torch.compile of the transformer blocks: same output, faster steps after a compile")),
    (Output(MODEL, "model"),),
)  # fmt: skip
TEXT_ENCODER_LOADER = NodeSpec(
    "JavisDiTTextEncoderLoader", "JavisDiT++ Text Encoder Loader",
    "The demo model's text encoder (MiniLM), or umT5 from a pipeline or Wan2.1 dir, as a CLIP for CLIPTextEncode. "
    "For text_encoders/umt5_xxl_*.safetensors use ComfyUI's Load CLIP (type wan).",
    core.load_text_encoder, (_source("text_encoder"),), (Output(CLIP, "clip"),),
)  # fmt: skip
VIDEO_VAE_LOADER = NodeSpec(
    "JavisDiTVideoVAELoader", "JavisDiT++ Video VAE Loader",
    "The demo model's video codec, or the Wan2.1 VAE of a pipeline or Wan2.1 dir, as a VAE for VAEDecode. "
    "For vae/wan_2.1_vae.safetensors use ComfyUI's Load VAE.",
    core.load_video_vae, (_source("vae"),), (Output(VAE, "vae"),),
)  # fmt: skip
AUDIO_VAE_LOADER = NodeSpec(
    "JavisDiTAudioVAELoader", "JavisDiT++ Audio VAE + Vocoder Loader",
    "AudioLDM2's mel VAE and HiFi-GAN vocoder (fp32) from models/javisdit/audioldm2 (cvssp/audioldm2's vae/ + "
    "vocoder/), a pipeline dir, or the demo model's codec.",
    core.load_audio_vae, (_source("audio_vae"),), (Output(AUDIO_VAE, "audio_vae"),),
)  # fmt: skip
EMPTY_LATENTS = NodeSpec(
    "JavisDiTEmptyLatents", "JavisDiT++ Empty Latents",
    "Fixes the clip: sound and picture (t2av), picture only (t2v) or sound only (t2a), its length, size and "
    "batch. The VAE sets the latent grid.",
    core.empty_latents,
    (Param("vae", VAE, tooltip="the video VAE that will decode the clip"),
     Param("mode", "COMBO", default="t2av", options=core.MODES, tooltip="t2av: video with sound"),
     Param("duration", "FLOAT", default=2.0, min=DURATIONS[0], max=DURATIONS[1], step=0.25,
           tooltip="seconds at 16 fps (2 s = 33 frames ... 5 s = 81 frames)"),
     Param("resolution", "COMBO", default="240p", options=RESOLUTIONS),
     Param("aspect_ratio", "COMBO", default="16:9", options=core.ASPECT_CHOICES,
           tooltip="width:height (16:9 is landscape)"),
     Param("batch_size", "INT", default=1, min=1, max=64, step=1)),
    (Output(LATENT, "latent"),),
)  # fmt: skip
SAMPLER = NodeSpec(
    "JavisDiTSampler", "JavisDiT++ Sampler",
    "Joint audio-video rectified-flow sampling with the official shifted schedule and classifier-free guidance. "
    "denoise < 1 starts from the given latents noised to the matching sigma (refine a previous result). Frames "
    "set by the Reference nodes are held as their masks say. Shows a live preview of the picture.",
    core.sample,
    (Param("model", MODEL), Param("positive", CONDITIONING), Param("negative", CONDITIONING),
     Param("latent", LATENT),
     Param("seed", "INT", default=0, min=0, max=MAX_SEED, control_after_generate=True),
     Param("steps", "INT", default=50, min=1, max=1000, step=1),
     Param("video_cfg", "FLOAT", default=5.0, min=0.0, max=50.0, step=0.1, tooltip="guidance scale for video"),
     Param("audio_cfg", "FLOAT", default=5.0, min=0.0, max=50.0, step=0.1, tooltip="guidance scale for audio"),
     Param("shift", "FLOAT", default=0.0, min=0.0, max=100.0, step=0.01,
           tooltip="timestep shift; 0 = the official value for the clip's size and length"),
     Param("denoise", "FLOAT", default=1.0, min=0.01, max=1.0, step=0.01,
           tooltip="1: from pure noise; below 1: the last steps of a steps/denoise schedule from the given latents"),
     Param("scheduler", "COMBO", default="euler", options=SCHEDULERS, tooltip="euler is the official sampler"),
     Param("preset", "COMBO", default="custom", options=core.PRESET_CHOICES,
           tooltip="custom: the steps and scheduler above; exact: the official 50 Euler steps; fast / fastest: "
                   "fewer UniPC steps (fastest adds a first-block cache), approximate")),
    (Output(LATENT, "latent"),),
    step_hooks=True,
)  # fmt: skip
REFERENCE_VIDEO = NodeSpec(
    "JavisDiTReferenceVideo", "JavisDiT++ Reference Video / Image",
    "Starts the clip from these frames: a video keeps its picture and the sampler makes the sound (video to audio); "
    "one image is the first frame (image to audio+video); the last frames of a clip continue it (extension). They "
    "are resampled to 16 fps, resized to fill the clip, trimmed to it and encoded with the VAE into the latent.",
    reference.reference_video,
    (Param("latent", LATENT, tooltip="from JavisDiT++ Empty Latents (t2av or t2v)"),
     Param("vae", VAE, tooltip="the video VAE the latents decode with"),
     Param("images", "IMAGE", tooltip="frames (Load Video -> Get Video Components) or one image"),
     Param("denoise", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.01,
           tooltip="how far the sampler may move these frames: 0 keeps them exactly, 1 only starts from them "
                   "(the official edit ratio)"),
     Param("fps", "FLOAT", default=16.0, min=1.0, max=240.0, step=0.001, tooltip="frame rate of the images")),
    (Output(LATENT, "latent"),),
)  # fmt: skip
REFERENCE_AUDIO = NodeSpec(
    "JavisDiTReferenceAudio", "JavisDiT++ Reference Audio",
    "Starts the clip from this sound: the sampler keeps it and makes the picture (audio to video). It is mixed to "
    "mono, resampled to 16 kHz, trimmed to the clip and encoded with the AudioLDM2 VAE into the latent.",
    reference.reference_audio,
    (Param("latent", LATENT, tooltip="from JavisDiT++ Empty Latents (t2av or t2a)"),
     Param("audio_vae", AUDIO_VAE), Param("audio", "AUDIO", tooltip="e.g. from Load Audio"),
     Param("denoise", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.01,
           tooltip="how far the sampler may move this sound: 0 keeps it exactly, 1 only starts from it")),
    (Output(LATENT, "latent"),),
)  # fmt: skip
AUDIO_DECODE = NodeSpec(
    "JavisDiTAudioDecode", "JavisDiT++ Audio Decode",
    "Decodes the audio latents to AUDIO (16 kHz mono), exactly as long as the clip. The video latents decode "
    "with ComfyUI's VAE Decode.",
    core.decode_audio,
    (Param("audio_vae", AUDIO_VAE), Param("latent", LATENT)),
    (Output("AUDIO", "audio"),),
)  # fmt: skip

NODE_SPECS: tuple[NodeSpec, ...] = (
    MODEL_LOADER, TEXT_ENCODER_LOADER, VIDEO_VAE_LOADER, AUDIO_VAE_LOADER, EMPTY_LATENTS, REFERENCE_VIDEO,
    REFERENCE_AUDIO, SAMPLER, AUDIO_DECODE,
)  # fmt: skip
