"""User media for conditioned generation: read, check and fit videos, sounds and pictures to a request.

Videos are read at 16 fps (nearest earlier frame), pictures resized to fill and centre-cropped to the decoded size
(``training.data.resize_crop``, the official "resize_crop" transform), sounds resampled to 16 kHz mono (first
channel, as the official loader) and trimmed or zero-padded to the clip. Every adjustment is described in words so
the pipeline, the CLI and the app can report it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from .media import _read_audio, read_video
from .pipelines.sizes import FPS, SAMPLE_RATE

MIN_SECONDS = 0.3125  # 5 frames: two latent frames, the shortest clip a window can hold
MAX_SECONDS = 60.0
SAMPLE_RATE_RANGE = (4000, 192000)
FPS_RANGE = (1.0, 240.0)
VIDEO_ACCEPTS = "a video file PyAV can decode (mp4, webm, mov, mkv, ...) or frames shaped (T, H, W, 3)"
AUDIO_ACCEPTS = "a sound file (wav, mp3, flac, ogg, m4a, ...), a video with a sound track, or a mono waveform array"
IMAGE_ACCEPTS = "a picture file (png, jpg, webp, ...) or an array shaped (H, W, 3)"


@dataclass
class MediaInput:
    """A conditioning input with its own settings. ``source``: a path or an array; ``strength``: the edit ratio
    (0 = kept exactly, 1 = only the starting noise; None = the call's ``strength``); ``window``: (start, end) in
    seconds on the clip's timeline, the part held (None = all the input covers); ``rate``: frames per second of a
    frames array or the sample rate of a waveform array (default 16 fps / 16 kHz)."""

    source: str | os.PathLike | np.ndarray | torch.Tensor
    strength: float | None = None
    window: tuple[float, float] | None = None
    rate: float | None = None


@dataclass
class Clip:
    """Media on the clip's timeline: ``frames`` uint8 (T, H, W, 3) at 16 fps, ``audio`` float32 (N,) at 16 kHz."""

    frames: np.ndarray | None = None
    audio: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        if self.frames is not None:
            return len(self.frames) / FPS
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def as_input(value) -> MediaInput | None:
    if value is None or isinstance(value, MediaInput):
        return value
    return MediaInput(value)


def _check_file(path: Path, name: str, accepts: str) -> None:
    if not path.exists():
        raise ValueError(f"{name}: file {path} does not exist (accepted: {accepts})")
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder (accepted: {accepts})")


def _check_rate(value: float | None, name: str, default: float, allowed: tuple[float, float], unit: str) -> float:
    rate = default if value is None else value
    if not isinstance(rate, (int, float)) or not allowed[0] <= rate <= allowed[1]:
        raise ValueError(f"{name}: rate must be from {allowed[0]:g} to {allowed[1]:g} {unit} (got {value!r})")
    return float(rate)


def _check_length(seconds: float, name: str) -> None:
    if seconds < MIN_SECONDS:
        raise ValueError(f"{name}: {seconds:.2f} s is too short; at least {MIN_SECONDS} s (5 frames at 16 fps)")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{name}: {seconds:.1f} s is too long; at most {MAX_SECONDS:g} s "
                         "(cut it first; the part past the clip length would be dropped anyway)")  # fmt: skip


def _frames_uint8(array, name: str, accepts: str, ndim: int) -> np.ndarray:
    x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).detach().cpu()
    if x.ndim != ndim or x.shape[-1] != 3:
        shape = "(T, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise ValueError(f"{name}: an array must be shaped {shape} (got {tuple(x.shape)}; accepted: {accepts})")
    if x.dtype == torch.uint8:
        return x.numpy()
    if not x.is_floating_point():
        raise ValueError(f"{name}: array values must be uint8 or float in [0, 1] (got {x.dtype})")
    return (x.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def resample(waveform: np.ndarray, rate: float) -> np.ndarray:
    """Mono float32 waveform at ``rate`` -> 16 kHz (PyAV's resampler, as for files)."""
    if int(rate) == SAMPLE_RATE:
        return waveform.astype(np.float32)
    frame = av.AudioFrame.from_ndarray(waveform.astype(np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = int(rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = [f.to_ndarray()[0] for batch in (frame, None) for f in resampler.resample(batch)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def read_video_input(media: MediaInput, name: str = "video") -> Clip:
    """Frames at 16 fps (and the file's own sound, if any)."""
    notes = []
    if isinstance(media.source, (str, os.PathLike)):
        path = Path(media.source)
        _check_file(path, name, VIDEO_ACCEPTS)
        try:
            frames, audio, fps = read_video(path, fps=FPS)
        except av.error.FFmpegError as error:
            raise ValueError(f"{name}: cannot read {path} ({error}); accepted: {VIDEO_ACCEPTS}") from None
        except ValueError as error:  # no video stream
            raise ValueError(f"{name}: {path} has no video stream; accepted: {VIDEO_ACCEPTS}") from error
        if len(frames) == 0:
            raise ValueError(f"{name}: {path} holds no frames; accepted: {VIDEO_ACCEPTS}")
        with av.open(os.fspath(path)) as container:
            source_fps = container.streams.video[0].average_rate
        if source_fps and abs(float(source_fps) - FPS) > 1e-3:
            notes.append(f"{name}: resampled from {float(source_fps):g} fps to {FPS} fps")
        audio = audio if len(audio) else None
    else:
        fps = _check_rate(media.rate, name, FPS, FPS_RANGE, "fps")
        frames, audio = _frames_uint8(media.source, name, VIDEO_ACCEPTS, 4), None
        if fps != FPS:
            count = max(1, int(round(len(frames) / fps * FPS)))
            frames = frames[np.minimum((np.arange(count) / FPS * fps + 1e-6).astype(int), len(frames) - 1)]
            notes.append(f"{name}: resampled from {fps:g} fps to {FPS} fps")
    _check_length(len(frames) / FPS, name)
    return Clip(frames=frames, audio=audio, notes=notes)


def read_audio_input(media: MediaInput, name: str = "audio") -> Clip:
    """A mono 16 kHz waveform."""
    notes = []
    if isinstance(media.source, (str, os.PathLike)):
        path = Path(media.source)
        _check_file(path, name, AUDIO_ACCEPTS)
        try:
            with av.open(os.fspath(path)) as container:
                if not container.streams.audio:
                    raise ValueError(f"{name}: {path} has no audio stream; accepted: {AUDIO_ACCEPTS}")
                stream = container.streams.audio[0].codec_context
                rate, channels = stream.sample_rate, stream.channels
            waveform = _read_audio(path, SAMPLE_RATE)
        except av.error.FFmpegError as error:
            raise ValueError(f"{name}: cannot read {path} ({error}); accepted: {AUDIO_ACCEPTS}") from None
        _check_rate(rate, name, SAMPLE_RATE, SAMPLE_RATE_RANGE, "Hz")
        if rate != SAMPLE_RATE:
            notes.append(f"{name}: resampled from {rate} Hz to {SAMPLE_RATE} Hz")
        if channels > 1:
            notes.append(f"{name}: {channels} channels, the first one kept")
    else:
        rate = _check_rate(media.rate, name, SAMPLE_RATE, SAMPLE_RATE_RANGE, "Hz")
        waveform = torch.as_tensor(np.asarray(media.source) if not isinstance(media.source, torch.Tensor)
                                   else media.source).detach().cpu().float()  # fmt: skip
        if waveform.ndim == 2 and waveform.shape[0] <= 8:
            if waveform.shape[0] > 1:
                notes.append(f"{name}: {waveform.shape[0]} channels, the first one kept")
            waveform = waveform[0]
        if waveform.ndim != 1:
            raise ValueError(f"{name}: a waveform must be shaped (N,) or (channels, N) (got {tuple(waveform.shape)})")
        if not torch.isfinite(waveform).all():
            raise ValueError(f"{name}: the waveform holds NaN or infinite values")
        waveform = resample(waveform.numpy(), rate)
        if rate != SAMPLE_RATE:
            notes.append(f"{name}: resampled from {rate:g} Hz to {SAMPLE_RATE} Hz")
    _check_length(len(waveform) / SAMPLE_RATE, name)
    return Clip(audio=waveform, notes=notes)


def read_image_input(media: MediaInput, name: str = "image") -> np.ndarray:
    """uint8 (H, W, 3)."""
    if isinstance(media.source, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError

        path = Path(media.source)
        _check_file(path, name, IMAGE_ACCEPTS)
        try:
            with Image.open(path) as picture:
                return np.asarray(picture.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{name}: cannot read {path} as a picture ({error}); accepted: {IMAGE_ACCEPTS}") from None
    return _frames_uint8(media.source, name, IMAGE_ACCEPTS, 3)


def fit_frames(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, height, width) in [-1, 1], resized to fill and centre-cropped."""
    from .training.data import resize_crop

    return resize_crop(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2), height, width)


def fit_audio(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    if len(waveform) >= num_samples:
        return waveform[:num_samples]
    return np.pad(waveform, (0, num_samples - len(waveform)))
