"""The Gradio studio's logic without Gradio: settings validation, lazy model loading, generation and its files.

``app.py`` only lays out the page and turns :class:`StudioError` into ``gr.Error``; everything a user can get
wrong, and everything that can fail while loading or sampling, is decided here so it can be tested directly.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .server import JobGate, OutputStore, Rejected
from ..loaders.hub import AUDIOLDM2_REPO, JAVISDIT_REPO, WAN_REPO
from ..pipelines.requests import (
    MAX_PROMPT_CHARS,
    MODES,
    UI_LIMITS,
    Range,
    RequestError,
    check_request,
    has_video,
    resolve_size,
)
from ..pipelines.sizes import ASPECT_PRESETS, ASPECT_RATIOS, FPS, SAMPLE_RATE, frames_for_duration, image_size
from ..codecs.text import DEFAULT_NEGATIVE_PROMPT
from ..utils import best_device

logger = logging.getLogger("javis_studio")

MODE_LABELS = {"t2av": "Audio + video", "t2a": "Audio only", "t2v": "Video only"}
MODE_CHOICES = [(MODE_LABELS[mode], mode) for mode in MODES]
MAX_SEED = int(UI_LIMITS["seed"].high)
# the page's names for the request fields, used in every message about them
UI_NAMES = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "mode": "Mode", "duration": "Duration (s)",
    "resolution": "Resolution", "aspect_ratio": "Aspect ratio", "guidance_scale": "Guidance (video)",
    "audio_guidance_scale": "Guidance (audio)", "num_inference_steps": "Steps", "shift": "Shift", "seed": "Seed",
}  # fmt: skip
DEFAULT_KEEP_BYTES = 5 * 2**30  # the output folder's bound: 5 GB of results ...
DEFAULT_KEEP_SECONDS = 24 * 3600  # ... none older than a day
# What the generation starts from (README, "Conditioned generation"); the uploads each task needs
TASK_CHOICES = [("Text", "text"), ("Video to audio", "v2a"), ("Audio to video", "a2v"),
                ("Image to audio + video", "i2av"), ("Extend a clip", "extend")]  # fmt: skip
TASK_UPLOADS = {"text": (), "v2a": ("video_in",), "a2v": ("audio_in",), "i2av": ("image_in",),
                "extend": ("video_in",)}  # fmt: skip
_UPLOAD_NAMES = {"video_in": "a video", "audio_in": "a sound", "image_in": "a picture"}
_PIPELINE_INPUTS = {"video_in": "video", "audio_in": "audio", "image_in": "image"}
MAX_EXTEND_SECONDS = 60.0
_OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


class StudioError(Exception):
    """A problem to show the user as is (bad setting, missing weights, out of memory, cancelled)."""


class GenerationCancelled(StudioError):
    pass


# ---------------------------------------------------------------------------------------------- choices
def aspect_choices(resolution: str, spatial_stride: int = 8) -> list[tuple[str, str]]:
    """(label, value) pairs: the three presets first, then every other official ratio, each labelled with the
    width x height the file will have (the official size rounded up to the model's latent grid: ``spatial_stride``
    pixels per latent, 8 for Wan's VAE)."""
    from ..codecs.video import decoded_video_size

    def size(ratio: str) -> str:
        height, width = decoded_video_size(*image_size(resolution, ratio), spatial_stride=spatial_stride)
        return f"{width}×{height}"

    choices = [(f"{name.capitalize()} · {size(ratio)}", name) for name, ratio in ASPECT_PRESETS.items()]
    presets = set(ASPECT_PRESETS.values())
    for ratio in sorted(set(ASPECT_RATIOS) - presets, key=ASPECT_RATIOS.get):
        h, w = ratio.split(":")
        choices.append((f"{w}:{h} · {size(ratio)}", ratio))
    return choices


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class GenerationSettings:
    """One validated request, in the pipeline's terms; ``to_dict`` is the settings JSON shown with a result."""

    prompt: str
    mode: str = "t2av"
    duration: float = 4.0
    resolution: str = "240p"
    aspect_ratio: str = "landscape"
    guidance_scale: float = 5.0
    audio_guidance_scale: float = 5.0
    num_inference_steps: int = 50
    shift: float | None = None  # None: the official formula for the size and length
    seed: int = 42
    negative_prompt: str | None = None  # None: the official default for the mode
    task: str = "text"  # TASK_CHOICES: what the generation starts from
    video_in: str | None = None
    audio_in: str | None = None
    image_in: str | None = None
    strength: float = 0.0  # how much the given media may change (0 = kept exactly)
    extend_to: float | None = None  # seconds, for task "extend" (and optional with "text" / "i2av")

    @classmethod
    def from_ui(
        cls,
        prompt: str | None,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        mode: str = "t2av",
        duration: float = 4,
        resolution: str = "240p",
        aspect_ratio: str = "landscape",
        guidance_scale: float = 5.0,
        audio_guidance_scale: float | None = None,
        link_guidance: bool = True,
        num_inference_steps: int = 50,
        shift: float | None = 0,
        seed: int | None = 42,
        randomize_seed: bool = False,
        task: str = "text",
        video_in: str | None = None,
        audio_in: str | None = None,
        image_in: str | None = None,
        strength: float = 0.0,
        extend_to: float | None = None,
    ) -> GenerationSettings:
        """Validate what the page (or an API caller) sent. ``shift`` 0/None means automatic, an untouched
        default negative prompt means the mode's default, ``link_guidance`` reuses the video scale for audio."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise StudioError("Prompt is empty: describe what should be seen and heard.")
        prompt = prompt.strip()
        if randomize_seed or seed is None or seed == "":
            seed = random_seed()
        if link_guidance or audio_guidance_scale is None:
            audio_guidance_scale = guidance_scale
        shift = None if shift in (None, 0, 0.0, "") else shift
        try:
            numbers = check_request(
                prompt, mode, num_inference_steps, guidance_scale, audio_guidance_scale, shift, seed=seed,
                negative_prompt=negative_prompt, limits=UI_LIMITS, names=UI_NAMES, max_prompt_chars=MAX_PROMPT_CHARS,
            )  # fmt: skip
            duration = UI_LIMITS["duration"].check("duration", duration, UI_NAMES["duration"])
            resolve_size(resolution, aspect_ratio, duration=duration, limits=UI_LIMITS, names=UI_NAMES)
        except RequestError as error:
            raise StudioError(str(error)) from None
        guidance_scale, audio_guidance_scale = numbers["guidance_scale"], numbers["audio_guidance_scale"]
        steps, shift_value, seed = numbers["num_inference_steps"], numbers.get("shift"), numbers["seed"]
        if negative_prompt is not None and negative_prompt.strip() == DEFAULT_NEGATIVE_PROMPT:
            negative_prompt = None
        conditioning = _check_task(task, mode, duration, video_in, audio_in, image_in, strength, extend_to)
        return cls(
            prompt=prompt, mode=mode, duration=duration, resolution=resolution, aspect_ratio=aspect_ratio,
            guidance_scale=guidance_scale, audio_guidance_scale=audio_guidance_scale, num_inference_steps=steps,
            shift=shift_value, seed=seed, negative_prompt=negative_prompt, **conditioning,
        )  # fmt: skip

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return image_size(self.resolution, self.aspect_ratio)

    def pipeline_kwargs(self) -> dict:
        kwargs = {name: getattr(self, name) for name in (
            "prompt", "negative_prompt", "mode", "resolution", "aspect_ratio", "duration", "num_inference_steps",
            "guidance_scale", "audio_guidance_scale", "shift")}  # fmt: skip
        if self.task != "text":
            kwargs |= {argument: getattr(self, name) for name, argument in _PIPELINE_INPUTS.items()}
            kwargs["strength"] = self.strength
            if self.task in ("v2a", "a2v"):
                kwargs["duration"] = None  # the clip follows the given media's length (up to 5 s)
        if self.extend_to is not None:
            kwargs["extend_to"] = self.extend_to
        # the CLI seeds a CPU generator the same way, so its command (cli_command) reproduces this result exactly
        return kwargs | {"generator": torch.Generator("cpu").manual_seed(self.seed)}

    def cli_command(self, model: ModelConfig, demo: bool = False) -> str:
        """The ``python -m javis_core.generate`` line that regenerates this result (``demo``: with the demo model)."""
        args = ["python", "-m", "javis_core.generate", "--prompt", self.prompt, "--mode", self.mode,
                "--duration", f"{self.duration:g}", "--resolution", self.resolution,
                "--aspect-ratio", self.aspect_ratio, "--steps", str(self.num_inference_steps),
                "--guidance", f"{self.guidance_scale:g}", "--seed", str(self.seed)]  # fmt: skip
        if self.audio_guidance_scale != self.guidance_scale:
            args += ["--audio-guidance", f"{self.audio_guidance_scale:g}"]
        if self.shift is not None:
            args += ["--shift", f"{self.shift:g}"]
        if self.negative_prompt is not None:
            args += ["--negative-prompt", self.negative_prompt]
        if model.preset is not None:
            args += ["--preset", model.preset]
        media = (("--video-in", self.video_in), ("--audio-in", self.audio_in), ("--image-in", self.image_in))
        for flag, value in media:
            if value is not None:
                args += [flag, value]
        if self.task in ("v2a", "a2v"):
            args.remove("--duration"), args.remove(f"{self.duration:g}")
        if self.task != "text" and self.strength:
            args += ["--strength", f"{self.strength:g}"]
        if self.extend_to is not None:
            args += ["--extend-to", f"{self.extend_to:g}"]
        if demo:
            args += ["--model", "demo"]
        else:
            for flag, value, default in (("--model", model.model, JAVISDIT_REPO), ("--wan", model.wan, WAN_REPO),
                                         ("--audioldm2", model.audioldm2, AUDIOLDM2_REPO)):  # fmt: skip
                if str(value) != default:
                    args += [flag, str(value)]
            if model.dtype:
                args += ["--dtype", model.dtype]
        return shlex.join(args + ["--out", "clip.mp4" if has_video(self.mode) else "clip.wav"])

    @property
    def num_frames(self) -> int:
        return frames_for_duration(self.duration)

    def to_dict(self) -> dict:
        return asdict(self) | {"num_frames": self.num_frames}


def _within(span: Range, label: str, value) -> float:
    """``value`` (a number or its text) within ``span``; the error names the control by its label."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{label} must be {span.describe()} (got {value!r})") from None
    try:
        return span.check(label, number, label)
    except RequestError as error:
        raise StudioError(str(error)) from None


def _check_task(task, mode, duration, video_in, audio_in, image_in, strength, extend_to) -> dict:
    """The conditioning part of a request: the task's uploads are there and readable, the numbers in range."""
    from ..media_inputs import MediaInput, read_audio_input, read_image_input, read_video_input

    tasks = [value for _, value in TASK_CHOICES]
    if task not in tasks:
        raise StudioError(f"Task must be one of {', '.join(tasks)} (got {task!r})")
    uploads = {"video_in": video_in or None, "audio_in": audio_in or None, "image_in": image_in or None}
    needed = TASK_UPLOADS[task]
    label = dict((value, name) for name, value in TASK_CHOICES)[task]
    for name in needed:
        if uploads[name] is None:
            raise StudioError(f"{label} needs {_UPLOAD_NAMES[name]}: upload one first.")
    if task in ("v2a", "a2v", "extend") and mode != "t2av":
        raise StudioError(f"{label} needs the mode Audio + video (got {mode}).")
    if task == "i2av" and mode == "t2a":
        raise StudioError(f"{label} needs the mode Audio + video or Video only.")
    readers = {"video_in": read_video_input, "audio_in": read_audio_input, "image_in": read_image_input}
    kept = {name: None for name in uploads}
    for name in needed:
        try:
            readers[name](MediaInput(uploads[name]), _PIPELINE_INPUTS[name])
        except ValueError as error:
            raise StudioError(f"The uploaded file cannot be used: {error}") from None
        kept[name] = str(uploads[name])
    strength = _within(Range(0, 1), "Strength", strength if task != "text" else 0)
    if task == "extend" and extend_to in (None, "", 0):
        raise StudioError("Extend a clip needs a target length: set 'Extend to (s)'.")
    if extend_to in (None, "", 0) or task in ("v2a", "a2v"):
        extend_to = None
    else:
        low = duration if task != "extend" else 0
        extend_to = _within(Range(low, MAX_EXTEND_SECONDS, low_open=True), "Extend to (s)", extend_to)
    return dict(task=task, strength=strength, extend_to=extend_to, **kept)


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """Where the weights are and how to place them (the app's start-up flags)."""

    model: str = JAVISDIT_REPO
    wan: str = WAN_REPO
    audioldm2: str = AUDIOLDM2_REPO
    device: str = field(default_factory=best_device)
    dtype: str | None = None  # None: bf16 on accelerators, fp32 on CPU
    offload: bool = False
    vae_tiling: bool = False
    # speed/memory options of load_pipeline, and the sampling preset every generation uses (None: exact sampler)
    compile: bool = False
    attention: str | None = None
    group_offload: bool = False
    fp8: bool = False
    preset: str | None = None

    @property
    def dtype_name(self) -> str:
        from ..loaders.pipeline_loader import default_dtype
        from ..utils import parse_dtype

        dtype = parse_dtype(self.dtype) if self.dtype else default_dtype(self.device)
        return str(dtype).removeprefix("torch.")


FULL_MODEL, DEMO_MODEL = "JavisDiT++ (full weights)", "Offline demo (small, CPU)"
# The page's starting values for each model; the demo's are what it was trained and evaluated on (demo_model.py).
FULL_DEFAULTS = {"duration": 4, "steps": 50, "resolution": "240p", "aspect_ratio": "landscape"}


def full_weights_present(config: ModelConfig) -> bool:
    """The release, Wan2.1 and AudioLDM2 are local dirs or already in the hub cache (nothing to download)."""
    from ..loaders.hub import AUDIOLDM2_FILES, JAVISDIT_FILES, WAN_DIFFUSERS_FILES, WAN_FILES, weights_present

    if (Path(config.model) / "model_index.json").exists():
        return True
    return (weights_present(config.model, JAVISDIT_FILES) and weights_present(config.wan, WAN_FILES + WAN_DIFFUSERS_FILES)
            and weights_present(config.audioldm2, AUDIOLDM2_FILES))  # fmt: skip


class ModelManager:
    """Loads each pipeline once, on first use, and remembers why a load failed (a later call tries again).

    With ``demo_dir`` (a demo model dir, see ``demo/model.py``) the offline demo model is used when the full
    weights are not present; when both are present each visitor chooses one (``choice`` arguments: a label of
    :attr:`choices`) without changing it for anyone else. Nothing a visitor does starts a download the operator's
    command line did not ask for: the full model is offered beside the demo only when its weights are here.
    """

    def __init__(self, config: ModelConfig, loader: Callable | None = None, demo_dir: str | Path | None = None,
                 demo_loader: Callable | None = None, full_present: bool | None = None):  # fmt: skip
        from ..demo.model import demo_available

        self.config = config
        self._loader = loader
        self._demo_loader = demo_loader
        self.demo_dir = Path(demo_dir) if demo_dir is not None and demo_available(demo_dir) else None
        self.full_present = full_weights_present(config) if full_present is None else full_present
        self.use_demo = self.demo_dir is not None and not self.full_present  # the starting choice
        self._pipes: dict[str, object] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def full_label(self) -> str:
        """The full model's name on the page: the release's, or the folder/hub id given to ``--model``."""
        if str(self.config.model) == JAVISDIT_REPO:
            return FULL_MODEL
        return f"{Path(str(self.config.model)).name or self.config.model} (--model)"

    @property
    def choices(self) -> list[str]:
        if self.demo_dir is not None and self.full_present:
            return [self.full_label, DEMO_MODEL]
        return [DEMO_MODEL] if self.use_demo else [self.full_label]

    @property
    def choice(self) -> str:
        """The choice a new visitor starts with."""
        return DEMO_MODEL if self.use_demo else self.full_label

    def _resolve(self, choice: str | None) -> str:
        if choice is None:
            return self.choice
        if choice not in self.choices:
            raise StudioError(f"Model must be one of {', '.join(self.choices)} (got {choice!r})")
        return choice

    def is_demo(self, choice: str | None = None) -> bool:
        return self._resolve(choice) == DEMO_MODEL

    @property
    def loaded(self) -> bool:
        return bool(self._pipes)

    def defaults(self, choice: str | None = None) -> dict:
        """Duration, steps, resolution and aspect preset the model is best used with (the preset's steps, if any)."""
        from ..demo.model import DEMO_DURATION, DEMO_SIZE, DEMO_STEPS
        from ..pipelines.speed import PRESETS

        demo = {"duration": DEMO_DURATION, "steps": DEMO_STEPS, **DEMO_SIZE}
        start = demo if self.is_demo(choice) else dict(FULL_DEFAULTS)
        if self.config.preset is not None:
            start["steps"] = PRESETS[self.config.preset].num_inference_steps
        return start

    def spatial_stride(self, choice: str | None = None) -> int:
        """Pixels per latent of the model's video VAE (what the decoded size is rounded to), read from the loaded
        pipeline or its saved ``vae/config.json``; Wan's 8 otherwise."""
        from ..codecs.video import SPATIAL_STRIDE, spatial_stride_of

        choice = self._resolve(choice)
        if choice in self._pipes:
            return spatial_stride_of(getattr(self._pipes[choice], "vae", None))
        folder = self.demo_dir if choice == DEMO_MODEL else Path(str(self.config.model))
        try:
            config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
            return int(config.get("scale_factor_spatial", SPATIAL_STRIDE))
        except (OSError, ValueError):
            return SPATIAL_STRIDE

    def status_markdown(self, choice: str | None = None) -> str:
        c, choice = self.config, self._resolve(choice)
        if choice in self._pipes:
            state = "**loaded**"
        elif choice in self._errors:
            state = "**not loaded**: " + self._errors[choice].splitlines()[0]
        else:
            state = "loads on the first Generate"
        if choice == DEMO_MODEL:
            note = "" if self.full_present else " The full JavisDiT++ weights were not found, so the demo model is used."
            return (f"**Model** offline demo (`{self.demo_dir.name}`: a small JavisDiT++ trained on balls, lights and "
                    f"drums in red, green, blue and yellow; best at 240p landscape, 2 s) · **device** `cpu` · "
                    f"{state}.{note}")  # fmt: skip
        where = f"{c.device} (CPU offload)" if c.offload else c.device
        return f"**Model** `{c.model}` · **device** `{where}` · **dtype** `{c.dtype_name}` · {state}"

    def get(self, choice: str | None = None):
        """The pipeline; a StudioError says exactly what is missing and how to get it."""
        from ..loaders.checkpoints import CheckpointError
        from ..loaders.hub import WeightsNotFoundError

        choice = self._resolve(choice)
        with self._lock:
            if choice in self._pipes:
                return self._pipes[choice]
            c = self.config
            loader = self._loader
            if loader is None:
                from ..loaders.pipeline_loader import load_pipeline as loader
            started = time.perf_counter()
            try:
                if choice == DEMO_MODEL:
                    pipe = (self._demo_loader or loader)(self.demo_dir)
                else:
                    pipe = loader(
                        model=c.model, wan=c.wan, audioldm2=c.audioldm2, device=c.device, torch_dtype=c.dtype,
                        offload=c.offload, vae_tiling=c.vae_tiling, compile=c.compile, attention_backend=c.attention,
                        group_offload=c.group_offload, fp8_storage=c.fp8,
                    )  # fmt: skip
            except (WeightsNotFoundError, CheckpointError, ValueError, OSError, ImportError) as error:
                self._errors[choice] = f"Could not load the model. {error}"
                raise StudioError(self._errors[choice]) from error
            except _OUT_OF_MEMORY as error:
                self._errors[choice] = (
                    f"Out of memory while loading the model on {c.device}: start with --offload or --dtype bf16"
                )
                raise StudioError(self._errors[choice]) from error
            self._errors.pop(choice, None)
            self._pipes[choice] = pipe
            logger.info("pipeline loaded in %.1f s", time.perf_counter() - started)
            return pipe


# ---------------------------------------------------------------------------------------------- generation
@dataclass
class GenerationResult:
    video: Path | None  # mp4 (with sound unless video-only)
    audio: Path | None  # wav of the soundtrack
    settings: dict
    thumbnail: Path | None = None  # the middle frame of the video, for the session's gallery
    record: Path | None = None  # the settings as written next to the files

    @property
    def download(self) -> Path:
        return self.video or self.audio

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.video, self.audio, self.thumbnail, self.record) if p is not None)


def _slug(text: str, length: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].strip("-") or "clip"


class Studio:
    """Runs one generation at a time through a fair line (:class:`JobGate`), writes each result under its
    session's folder in a bounded output folder (:class:`OutputStore`), and cancels by session or by job."""

    def __init__(self, models: ModelManager, output_root: str | Path, gate: JobGate | None = None,
                 keep_bytes: int = DEFAULT_KEEP_BYTES, keep_seconds: float = DEFAULT_KEEP_SECONDS):  # fmt: skip
        self.models = models
        self.store = OutputStore(output_root, keep_bytes, keep_seconds)
        self.output_root = self.store.root
        self.gate = gate or JobGate()
        self._jobs: dict[str, set[threading.Event]] = {}  # session -> cancel events of its running/waiting jobs
        self._forgotten: set[str] = set()
        self._lock = threading.Lock()
        self._counter = 0

    def session_dir(self, session: str) -> Path:
        return self.output_root / (re.sub(r"[^A-Za-z0-9_-]", "", session) or "default")

    def cancel(self, session: str) -> bool:
        """Stop the session's running generation after the current step, and its waiting ones; False if none."""
        with self._lock:
            events = list(self._jobs.get(session, ()))
        for event in events:
            event.set()
        return bool(events)

    def forget_session(self, session: str) -> None:
        """The visitor left: stop their generations, and delete their folder once none of them still writes."""
        with self._lock:
            busy = bool(self._jobs.get(session))
            if busy:
                self._forgotten.add(session)
        self.cancel(session)
        if not busy:
            self.store.forget(self.session_dir(session))

    def generate(self, settings: GenerationSettings, session: str = "default", on_progress: Callable | None = None,
                 *, client: str | None = None, model: str | None = None,
                 cancel: threading.Event | None = None) -> GenerationResult:  # fmt: skip
        """Wait for a turn, sample, then write the mp4 and/or wav under this session's folder.

        ``on_progress(done, total, what)``; ``client``: who asks (the per-client limit; default the session);
        ``model``: one of ``models.choices`` (default the starting one); ``cancel``: set it to stop this job.
        """
        report = on_progress or (lambda done, total, what: None)
        cancel = cancel or threading.Event()
        choice = self.models._resolve(model)
        try:
            ticket = self.gate.admit(client or session)
        except Rejected as error:
            raise StudioError(str(error)) from None
        with self._lock:
            self._jobs.setdefault(session, set()).add(cancel)
        try:
            def waiting(ahead: int) -> None:
                report(0, 1, f"Waiting for {ahead} earlier generation{'s' if ahead > 1 else ''}")

            stopped = lambda: GenerationCancelled("Generation cancelled.")  # noqa: E731
            with self.gate.turn(ticket, cancel, waiting, cancelled=stopped):
                if cancel.is_set():
                    raise GenerationCancelled("Generation cancelled.")
                if choice not in self.models._pipes:
                    report(0, 1, "Loading the model")
                pipe = self.models.get(choice)
                result = self._run(pipe, settings, session, cancel, report, choice)
                self.store.prune(keep=result.files)
                return result
        finally:
            with self._lock:
                self._jobs.get(session, set()).discard(cancel)
                gone = session in self._forgotten and not self._jobs.get(session)
                if not self._jobs.get(session):
                    self._jobs.pop(session, None)
                    self._forgotten.discard(session)
            if gone:
                self.store.forget(self.session_dir(session))

    def _run(self, pipe, settings, session, cancel, report, choice) -> GenerationResult:
        from ..media import write_video, write_wav
        from ..pipelines.schedule import official_shift

        total = settings.num_inference_steps

        def on_step_end(pipe, step, timestep, tensors):
            report(step + 1, total, "Denoising" if step + 1 < total else "Decoding video and audio")
            if cancel.is_set():  # raising here also skips decoding half-denoised latents
                logger.info("generation cancelled after step %d of %d", step + 1, total)
                raise GenerationCancelled("Generation cancelled.")
            return {}

        started = time.perf_counter()
        try:
            output = pipe(**settings.pipeline_kwargs(), preset=self.models.config.preset,
                          callback_on_step_end=on_step_end)  # fmt: skip
        except GenerationCancelled:
            pipe.maybe_free_model_hooks()
            raise
        except _OUT_OF_MEMORY as error:
            self._free_memory()
            height, width = settings.size
            raise StudioError(
                f"Out of memory on {self.models.config.device} at {width}×{height}, {settings.duration:g} s. "
                "Try a lower resolution or a shorter duration, or restart the app with --offload "
                "(and --dtype bf16 if you use fp32)."
            ) from error
        except ValueError as error:
            raise StudioError(f"Invalid setting: {error}") from error
        except RuntimeError as error:
            if "out of memory" in str(error).lower():
                self._free_memory()
                raise StudioError("Out of memory: try a lower resolution or a shorter duration.") from error
            raise
        elapsed = time.perf_counter() - started

        folder = self.session_dir(session)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._counter += 1
            stem = folder / f"{self._counter:04d}-{_slug(settings.prompt)}-{settings.seed}"
            while stem.with_suffix(".json").exists():  # a folder kept from before a restart
                self._counter += 1
                stem = folder / f"{self._counter:04d}-{_slug(settings.prompt)}-{settings.seed}"
        audio = None if output.audio is None else output.audio[0]
        video_path = audio_path = thumbnail = None
        if output.frames is not None:
            video_path = Path(write_video(stem.with_suffix(".mp4"), output.frames[0], fps=FPS, audio=audio,
                                          sample_rate=SAMPLE_RATE))  # fmt: skip
            thumbnail = video_thumbnail(video_path, folder / "thumbnails" / f"{stem.name}.jpg")
        if audio is not None:
            audio_path = Path(write_wav(stem.with_suffix(".wav"), audio, SAMPLE_RATE))
        height, width = settings.size
        frames_shape = None if output.frames is None else output.frames.shape[2:4]  # may be rounded up to /16
        demo = choice == DEMO_MODEL
        record = settings.to_dict() | {
            "height": None if frames_shape is None else int(frames_shape[0]),
            "width": None if frames_shape is None else int(frames_shape[1]),
            "shift": settings.shift or official_shift(height, width, settings.num_frames),
            "shift_automatic": settings.shift is None,
            "model": "demo" if demo else self.models.config.model,
            "device": "cpu" if demo else self.models.config.device,
            "dtype": "float32" if demo else self.models.config.dtype_name,
            "preset": self.models.config.preset,
            "seconds": round(elapsed, 1),
            "command": settings.cli_command(self.models.config, demo=demo),
            "report": list(getattr(output, "report", ())),  # what was done to the given media
        }
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
        return GenerationResult(video=video_path, audio=audio_path, settings=record, thumbnail=thumbnail,
                                record=stem.with_suffix(".json"))  # fmt: skip

    @staticmethod
    def _free_memory() -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def video_thumbnail(video: str | Path, out: str | Path, max_side: int = 320) -> Path:
    """The middle frame of ``video`` as a small JPEG (history thumbnails)."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        middle = (stream.frames or 1) // 2
        for index, frame in enumerate(container.decode(stream)):
            image = frame.to_image()
            if index >= middle:
                break
    image.thumbnail((max_side, max_side))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, quality=85)
    return out


def estimate_gpu_seconds(num_inference_steps: int, resolution: str, duration: float) -> int:
    """A generous ZeroGPU time budget in seconds (model moves + steps x video tokens + decoding), 60 to 300."""
    tokens = {"240p": 7_000, "360p": 15_000}.get(resolution, 27_000) * float(duration) / 4
    per_step = 0.25 * (tokens / 7_000) ** 1.3  # attention grows faster than linearly with the token count
    return int(min(300, max(60, 30 + int(num_inference_steps) * per_step * 1.3 + 10 * float(duration))))
