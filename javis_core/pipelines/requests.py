"""One rulebook for what a generation request may ask: the modes, the limits of every setting, one validator.

The pipeline, the command line, the studio and the ComfyUI nodes all check requests here, each naming the
fields the way its user sees them (``names``: ``num_inference_steps`` in Python, ``--steps`` on the command
line, "Steps" on the page). Front ends that offer a smaller range than the pipeline accepts (the studio's
sliders) take it from :data:`UI_LIMITS`, so the control, the check and the message agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .sizes import ASPECT_PRESETS, ASPECT_RATIOS, DURATIONS, RESOLUTIONS, frames_for_duration, image_size

MODES = ("t2av", "t2a", "t2v")  # audio + video, audio only, video only
TEMPORAL_STRIDE = 4  # the Wan VAE maps 1 + 4k frames to 1 + k latent frames


def has_audio(mode: str) -> bool:
    return mode in ("t2av", "t2a")


def has_video(mode: str) -> bool:
    return mode in ("t2av", "t2v")


def mode_for(video: bool, audio: bool) -> str:
    """The mode that makes these modalities (``video`` and ``audio`` not both False)."""
    if not (video or audio):
        raise ValueError("a request needs video, audio or both")
    return "t2av" if video and audio else ("t2v" if video else "t2a")


class RequestError(ValueError):
    """A setting outside what is allowed; ``field`` is its Python name, the message uses the caller's name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    integer: bool = False
    low_open: bool = False  # low itself is not allowed

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low_open:
            return f"{kind} above {_show(self.low)} up to {_show(self.high)}"
        return f"{kind} from {_show(self.low)} to {_show(self.high)}"

    def check(self, field: str, value, name: str | None = None) -> int | float:
        """``value`` within the range (ints for integer ranges); else a RequestError naming ``name``."""
        number = value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        if ok:
            too_low = value <= self.low if self.low_open else value < self.low
            ok = not too_low and value <= self.high and (not self.integer or float(value).is_integer())
            number = int(value) if ok and self.integer else value
        if not ok:
            raise RequestError(field, f"{name or field} must be {self.describe()} (got {value!r})")
        return number


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


# What the pipeline accepts (the official limits where the official code has them).
LIMITS: dict[str, Range] = {
    "duration": Range(*DURATIONS),
    "num_frames": Range(5, 161, integer=True),
    "height": Range(16, 1280, integer=True),
    "width": Range(16, 1280, integer=True),
    "num_inference_steps": Range(1, 1000, integer=True),
    "guidance_scale": Range(0, 50),
    "audio_guidance_scale": Range(0, 50),
    "shift": Range(0, 100, low_open=True),
}
# What the studio offers (its sliders, its checks and its messages); a shared server also bounds the cost.
UI_LIMITS: dict[str, Range] = LIMITS | {
    "num_inference_steps": Range(1, 100, integer=True),
    "guidance_scale": Range(0, 15),
    "audio_guidance_scale": Range(0, 15),
    "shift": Range(0, 20, low_open=True),
    "seed": Range(0, 2**32 - 1, integer=True),
}
MAX_PROMPT_CHARS = 2000  # the studio's bound for the prompt and the negative prompt (umT5 reads 512 tokens)

# How each front end names the fields in its messages.
CLI_NAMES = {
    "prompt": "--prompt", "negative_prompt": "--negative-prompt", "mode": "--mode", "duration": "--duration",
    "num_frames": "--num-frames", "resolution": "--resolution", "aspect_ratio": "--aspect-ratio",
    "num_inference_steps": "--steps", "guidance_scale": "--guidance", "audio_guidance_scale": "--audio-guidance",
    "shift": "--shift", "seed": "--seed",
}  # fmt: skip


def check_mode(mode, name: str = "mode") -> str:
    if mode not in MODES:
        raise RequestError("mode", f"{name} must be one of {', '.join(MODES)} (got {mode!r})")
    return mode


def check_mode_supported(mode: str, model_type: str) -> None:
    """A ``t2a``/``t2v`` transformer makes only its own modality; ``t2av`` makes all three modes."""
    if model_type != "t2av" and mode != model_type:
        raise RequestError("mode", f"mode {mode!r} needs a t2av transformer; the loaded one is {model_type!r}")


def check_num_frames(num_frames, low: int = 1, high: int | None = None, name: str = "num_frames") -> int:
    """A 4k+1 frame count (what the Wan VAE encodes), within [low, high] when given."""
    ok = isinstance(num_frames, int) and not isinstance(num_frames, bool) and num_frames >= low
    ok = ok and (num_frames - 1) % TEMPORAL_STRIDE == 0 and (high is None or num_frames <= high)
    if not ok:
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise RequestError(
            "num_frames", f"{name} must be 4k+1 {bounds}, e.g. 33, 49, 65, 81 (got num_frames={num_frames!r}); "
            "the official code rounds other counts up and decodes more frames (e.g. 102 -> 105)",
        )  # fmt: skip
    return num_frames


def check_text(field: str, text, *, required: bool, max_chars: int | None = None, name: str | None = None):
    """A prompt (a string or a list of them); ``required``: each must hold more than spaces."""
    name = name or field
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts) or (required and not texts):
        raise RequestError(field, f"{name} must be a {'non-empty ' if required else ''}string (or a list of them)")
    if required and not all(t.strip() for t in texts):
        raise RequestError(field, f"{name} must be a non-empty string (or a list of them)")
    longest = max((len(t) for t in texts), default=0)
    if max_chars is not None and longest > max_chars:
        raise RequestError(field, f"{name} is too long ({longest} characters; at most {max_chars})")
    return text


def resolve_size(resolution: str = "240p", aspect_ratio: str = "9:16", height: int | None = None,
                 width: int | None = None, duration: float | None = None, num_frames: int | None = None,
                 limits: Mapping[str, Range] = LIMITS, names: Mapping[str, str] | None = None,
                 ) -> tuple[int, int, int]:  # fmt: skip
    """(height, width, num_frames): the official size table, or explicit ``height``/``width``; ``duration``
    (default 4 s) or ``num_frames``."""
    names = names or {}
    if height is None and width is None:
        if resolution not in RESOLUTIONS:
            raise RequestError("resolution", f"{names.get('resolution', 'resolution')} must be one of "
                                             f"{', '.join(RESOLUTIONS)} (got {resolution!r})")  # fmt: skip
        if aspect_ratio not in ASPECT_PRESETS and aspect_ratio not in ASPECT_RATIOS:
            allowed = ", ".join(list(ASPECT_PRESETS) + list(ASPECT_RATIOS))
            name = names.get("aspect_ratio", "aspect_ratio")
            raise RequestError("aspect_ratio", f"{name} must be one of {allowed} (got {aspect_ratio!r}; "
                                               "ratios are height:width)")  # fmt: skip
        height, width = image_size(resolution, aspect_ratio)
    elif height is None or width is None:
        raise RequestError("height", "height and width must be given together")
    else:
        height = limits["height"].check("height", height, names.get("height"))
        width = limits["width"].check("width", width, names.get("width"))
    if num_frames is not None and duration is not None:
        raise RequestError("duration", "give either duration or num_frames, not both")
    if num_frames is not None:
        low, high = limits["num_frames"].low, limits["num_frames"].high
        return height, width, check_num_frames(num_frames, int(low), int(high), names.get("num_frames", "num_frames"))
    seconds = 4.0 if duration is None else duration
    span = limits["duration"]
    name = names.get("duration", "duration")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or math.isnan(seconds) or not (
        span.low <= seconds <= span.high
    ):
        raise RequestError("duration", f"{name} must be between {_show(span.low)} and {_show(span.high)} seconds "
                                       f"(got {duration!r})")  # fmt: skip
    return height, width, frames_for_duration(seconds)


def check_request(
    prompt=None,
    mode: str = "t2av",
    num_inference_steps: int = 50,
    guidance_scale: float = 5.0,
    audio_guidance_scale: float | None = None,
    shift: float | None = None,
    *,
    negative_prompt=None,
    prompt_embeds=None,
    seed: int | None = None,
    limits: Mapping[str, Range] = LIMITS,
    names: Mapping[str, str] | None = None,
    max_prompt_chars: int | None = None,
) -> dict[str, int | float]:
    """Check every setting of a request that needs no weights; a RequestError names the first bad one by the
    caller's name for it (``names``) and says what is allowed. Returns the numbers given (integer settings as
    ints). Sizes and lengths: :func:`resolve_size`."""
    names = names or {}
    numbers: dict[str, int | float] = {}
    check_mode(mode, names.get("mode", "mode"))
    if prompt_embeds is None:
        check_text("prompt", prompt, required=True, max_chars=max_prompt_chars, name=names.get("prompt"))
    if negative_prompt is not None:
        check_text("negative_prompt", negative_prompt, required=False, max_chars=max_prompt_chars,
                   name=names.get("negative_prompt"))  # fmt: skip
    given = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
             "audio_guidance_scale": audio_guidance_scale, "shift": shift, "seed": seed}  # fmt: skip
    for field, value in given.items():
        if value is not None and field in limits:
            numbers[field] = limits[field].check(field, value, names.get(field))
    return numbers
