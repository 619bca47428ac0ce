"""The nodes' schemas as plain data: inputs, outputs and the ``core`` function each node runs.

``nodes_v3.py`` turns every ``NodeSpec`` into a ComfyUI V3 ``io.ComfyNode``; tests read the specs directly.
Socket types: ComfyUI's own where one fits (IMAGE, AUDIO, FLOAT), our ``JAVIS_*`` types elsewhere so a
JavisDiT++ model is never wired into the stock Wan samplers by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from javis_core.loaders.hub import AUDIOLDM2_REPO, JAVISDIT_REPO, WAN_REPO
from javis_core.pipelines.schedule import SCHEDULERS
from javis_core.pipelines.sizes import ASPECT_PRESETS, ASPECT_RATIOS, DURATIONS, RESOLUTIONS
from javis_core.codecs.text import DEFAULT_NEGATIVE_PROMPT

from . import core

CATEGORY = "JavisDiT++"
MODEL = "JAVISDIT_MODEL"
TEXT_ENCODER = "JAVISDIT_TEXT_ENCODER"
VIDEO_VAE = "JAVISDIT_VIDEO_VAE"
AUDIO_VAE = "JAVISDIT_AUDIO_VAE"
CONDITIONING = "JAVISDIT_CONDITIONING"
LATENTS = "JAVISDIT_LATENTS"
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
MAX_SEED = 2**63 - 1


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


def _source(input_id: str, default_hub_id: str) -> tuple[Param, Param]:
    """A dropdown of models/javisdit/ sub-dirs plus the hub id, and a free path/hub-id override."""
    return (
        Param(input_id, "COMBO",
              default=default_hub_id, options=lambda: core.model_choices(default_hub_id),
              tooltip="a folder in ComfyUI/models/javisdit/, or the hub id (downloaded on first use)"),
        Param("path_or_hub_id", "STRING", default="",
              tooltip="optional: any local path or hub id; when set it replaces the dropdown choice"),
    )  # fmt: skip


DTYPE = Param("dtype", "COMBO", default="auto", options=core.DTYPES, tooltip="auto: bf16 on GPU, fp32 on CPU")
DEVICE = Param("device", "COMBO", default="auto", options=core.DEVICES, tooltip="auto: ComfyUI's compute device")
OFFLOAD = Param("offload", "BOOLEAN", default=False, tooltip="keep the weights in CPU memory between runs")

MODEL_LOADER = NodeSpec(
    "JavisDiTModelLoader", "JavisDiT++ Model Loader",
    "Loads the JavisDiT++ transformer: the official release dir (model/ + lora/, LoRA merged), a saved "
    "transformer or pipeline dir, or a hub id. ComfyUI's checkpoint loaders would take it for plain Wan2.1.",
    core.load_model,
    (*_source("model", JAVISDIT_REPO), DTYPE, DEVICE, OFFLOAD),
    (Output(MODEL, "model"),),
)  # fmt: skip
TEXT_ENCODER_LOADER = NodeSpec(
    "JavisDiTTextEncoderLoader", "JavisDiT++ Text Encoder Loader",
    "Loads umT5-XXL and its tokenizer from Wan2.1-T2V-1.3B (original or diffusers layout) or a pipeline dir.",
    core.load_text_encoder,
    (*_source("text_encoder", WAN_REPO), DTYPE, DEVICE, OFFLOAD),
    (Output(TEXT_ENCODER, "text_encoder"),),
)  # fmt: skip
VIDEO_VAE_LOADER = NodeSpec(
    "JavisDiTVideoVAELoader", "JavisDiT++ Video VAE Loader",
    "Loads the Wan2.1 video VAE (fp32) from Wan2.1-T2V-1.3B (either layout) or a pipeline dir.",
    core.load_video_vae,
    (*_source("vae", WAN_REPO), DEVICE, OFFLOAD,
     Param("tiling", "BOOLEAN", default=False, tooltip="decode in tiles: less memory, slower")),
    (Output(VIDEO_VAE, "video_vae"),),
)  # fmt: skip
AUDIO_VAE_LOADER = NodeSpec(
    "JavisDiTAudioVAELoader", "JavisDiT++ Audio VAE + Vocoder Loader",
    "Loads AudioLDM2's mel VAE and HiFi-GAN vocoder (fp32) from cvssp/audioldm2 or a pipeline dir.",
    core.load_audio_vae,
    (*_source("audio_vae", AUDIOLDM2_REPO), DEVICE, OFFLOAD),
    (Output(AUDIO_VAE, "audio_vae"),),
)  # fmt: skip
TEXT_ENCODE = NodeSpec(
    "JavisDiTTextEncode", "JavisDiT++ Text Encode",
    "Encodes the prompt and the negative prompt (the unconditional side of classifier-free guidance).",
    core.encode_text,
    (Param("text_encoder", TEXT_ENCODER),
     Param("prompt", "STRING", default="", multiline=True, tooltip="what to see and hear"),
     Param("negative_prompt", "STRING", default=DEFAULT_NEGATIVE_PROMPT, multiline=True,
           tooltip="the official negative prompt by default")),
    (Output(CONDITIONING, "conditioning"),),
)  # fmt: skip
EMPTY_LATENTS = NodeSpec(
    "JavisDiTEmptyLatents", "JavisDiT++ Empty Latents",
    "Fixes the clip: sound and picture (t2av), picture only (t2v) or sound only (t2a), its length, size and "
    "batch. Aspect ratios are the official height:width strings ('9:16' is landscape).",
    core.empty_latents,
    (Param("mode", "COMBO", default="t2av", options=core.MODES, tooltip="t2av: video with sound"),
     Param("duration", "FLOAT", default=4.0, min=DURATIONS[0], max=DURATIONS[1], step=0.25,
           tooltip="seconds at 16 fps (2 s = 33 frames ... 5 s = 81 frames)"),
     Param("resolution", "COMBO", default="240p", options=(*RESOLUTIONS, "custom"),
           tooltip="custom: use width and height below"),
     Param("aspect_ratio", "COMBO", default="landscape", options=(*ASPECT_PRESETS, *ASPECT_RATIOS),
           tooltip="official H:W ratios; landscape = 9:16"),
     Param("batch_size", "INT", default=1, min=1, max=64, step=1),
     Param("width", "INT", default=416, min=16, max=1280, step=16, tooltip="only with resolution 'custom'"),
     Param("height", "INT", default=240, min=16, max=1280, step=16, tooltip="only with resolution 'custom'"),
     Param("num_frames", "INT", default=0, min=0, max=161, step=1,
           tooltip="0: from duration; else 4k+1 frames (5 ... 161), overriding duration")),
    (Output(LATENTS, "latents"),),
)  # fmt: skip
SAMPLER = NodeSpec(
    "JavisDiTSampler", "JavisDiT++ Sampler",
    "Joint audio-video rectified-flow sampling with the official shifted schedule and classifier-free guidance. "
    "denoise < 1 starts from the given latents noised to the matching sigma (refine a previous result).",
    core.sample,
    (Param("model", MODEL), Param("conditioning", CONDITIONING), Param("latents", LATENTS),
     Param("seed", "INT", default=0, min=0, max=MAX_SEED, control_after_generate=True),
     Param("steps", "INT", default=50, min=1, max=1000, step=1),
     Param("video_cfg", "FLOAT", default=5.0, min=0.0, max=50.0, step=0.1, tooltip="guidance scale for video"),
     Param("audio_cfg", "FLOAT", default=5.0, min=0.0, max=50.0, step=0.1, tooltip="guidance scale for audio"),
     Param("shift", "FLOAT", default=0.0, min=0.0, max=100.0, step=0.01,
           tooltip="timestep shift; 0 = the official value for the clip's size and length"),
     Param("denoise", "FLOAT", default=1.0, min=0.01, max=1.0, step=0.01,
           tooltip="1: from pure noise; below 1: the last steps of a steps/denoise schedule from the given latents"),
     Param("scheduler", "COMBO", default="euler", options=SCHEDULERS, tooltip="euler is the official sampler")),
    (Output(LATENTS, "latents"),),
    step_hooks=True,
)  # fmt: skip
VIDEO_DECODE = NodeSpec(
    "JavisDiTVideoDecode", "JavisDiT++ Video Decode",
    "Decodes video latents to IMAGE frames (a batch of clips one after another) and their frame rate.",
    core.decode_video,
    (Param("video_vae", VIDEO_VAE), Param("latents", LATENTS)),
    (Output("IMAGE", "images"), Output("FLOAT", "fps", "16 frames per second; wire it into CreateVideo")),
)  # fmt: skip
AUDIO_DECODE = NodeSpec(
    "JavisDiTAudioDecode", "JavisDiT++ Audio Decode",
    "Decodes audio latents to AUDIO (16 kHz mono), exactly as long as the clip.",
    core.decode_audio,
    (Param("audio_vae", AUDIO_VAE), Param("latents", LATENTS)),
    (Output("AUDIO", "audio"),),
)  # fmt: skip

NODE_SPECS: tuple[NodeSpec, ...] = (
    MODEL_LOADER, TEXT_ENCODER_LOADER, VIDEO_VAE_LOADER, AUDIO_VAE_LOADER, TEXT_ENCODE, EMPTY_LATENTS, SAMPLER,
    VIDEO_DECODE, AUDIO_DECODE,
)  # fmt: skip
