"""Conditioned generation from user media on top of the latent conditioning of ``conditioning.py``.

* ``video=``: keep the picture, generate the sound (the video latents are held at the encoded frames);
* ``audio=``: keep the sound, generate the picture;
* ``image=``: the first frame (latent frame 0), sound and motion generated;
* ``extend_to=``: a longer clip by chained windows; each window starts from the last latent frames of the clip so far
  (re-encoded from its frames, so the causal VAE sees a proper first frame) and from the same stretch of its sound,
  both held; the new part is appended after that overlap with a 10 ms crossfade of the sound at the seam.

Held media with strength 0 come back untouched in the output (the user's own frames and waveform, not a VAE round
trip); with a strength above 0 the output is the model's edit of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..codecs.audio import AudioCodec, mel_frames_for, num_audio_samples
from .conditioning import LatentCondition
from ..media_inputs import (
    Clip,
    MediaInput,
    as_input,
    fit_audio,
    fit_frames,
    read_audio_input,
    read_image_input,
    read_video_input,
)
from .sizes import ASPECT_RATIOS, FPS, SAMPLE_RATE
from ..codecs.video import VideoCodec, decoded_video_size, spatial_stride_of

AUDIO_LATENT_SECONDS = 0.04  # 4 mel hops of 10 ms
EXTEND_OVERLAP_LATENTS = 3  # latent frames carried into the next window (9 frames, 0.5625 s)
MAX_EXTEND_SECONDS = 60.0
CROSSFADE = SAMPLE_RATE // 100


def _closest_aspect(height: int, width: int) -> str:
    return min(ASPECT_RATIOS, key=lambda name: abs(ASPECT_RATIOS[name] - height / width))


def _strength(media: MediaInput, default: float, name: str) -> float:
    value = default if media.strength is None else media.strength
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} strength must be a number from 0 (kept exactly) to 1 (only the starting noise) "
                         f"(got {value!r})")  # fmt: skip
    return float(value)


def _window(media: MediaInput, name: str, available: float, clip: float) -> tuple[float, float]:
    """The held stretch in seconds: the requested window within what the input covers and the clip."""
    start, end = media.window if media.window is not None else (0.0, math.inf)
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float)) and 0 <= start < end):
        raise ValueError(f"{name} window must be (start, end) seconds with 0 <= start < end (got {media.window!r})")
    end = min(end, available, clip)
    if end <= start:
        raise ValueError(f"{name} window ({start:g}, {media.window[1]:g}) s holds nothing: the input covers "
                         f"{available:.2f} s and the clip {clip:.2f} s")  # fmt: skip
    return float(start), float(end)


def _frame_span(latent: int) -> tuple[int, int]:
    """First and last frame a Wan latent frame decodes to (latent 0 is the single first frame)."""
    return (0, 0) if latent == 0 else (4 * latent - 3, 4 * latent)


def _held_latents(first: int, stop: int, num_latents: int) -> range:
    """Latent frames whose frames all lie in [first, stop)."""
    held = [i for i in range(num_latents) if _frame_span(i)[0] >= first and _frame_span(i)[1] < stop]
    return range(held[0], held[-1] + 1) if held else range(0)


def clip_pixels(frames: np.ndarray, num_frames: int, height: int, width: int) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) at 16 fps -> (3, T', height, width) in [-1, 1] to encode: trimmed to the clip and to
    whole latent frames (4k+1), resized to fill and centre-cropped."""
    usable = min(len(frames), num_frames)
    return fit_frames(frames[: 4 * ((usable - 1) // 4) + 1], height, width)


def clip_audio_latents(codec: AudioCodec, waveform: np.ndarray, num_frames: int) -> tuple[torch.Tensor, np.ndarray]:
    """A 16 kHz waveform -> (its audio latents (C, T, F) for a clip of ``num_frames``, the waveform fitted to it)."""
    fitted = fit_audio(waveform, num_audio_samples(num_frames))
    mel = codec.waveform_to_mel(torch.from_numpy(np.ascontiguousarray(fitted))[None], mel_frames_for(num_frames))
    return codec.encode_mel(mel, sample_posterior=False)[0].float().cpu(), fitted


class ConditionedRun:
    """Turns user media into latent conditions for one request and puts the media back into the output."""

    def __init__(self, pipe, height: int, width: int, num_frames: int, generator=None) -> None:
        self.pipe, self.num_frames = pipe, num_frames
        self.video_shape, self.audio_shape = ((1, *shape) for shape in pipe.latent_shapes(height, width, num_frames))
        self.size = decoded_video_size(height, width, spatial_stride_of(pipe.vae))
        self.num_samples = num_audio_samples(num_frames)
        self.video_condition: LatentCondition | None = None
        self.audio_condition: LatentCondition | None = None
        self.paste_frames: list[tuple[int, torch.Tensor]] = []  # (first frame, frames (T, H, W, 3) in [0, 1])
        self.paste_audio: tuple[int, np.ndarray] | None = None
        self.notes: list[str] = []

    # ------------------------------------------------------------------ picture
    def hold_frames(self, frames: np.ndarray, strength: float, window: tuple[float, float], name: str) -> None:
        """Hold the latent frames under ``window`` (seconds) at the encoded ``frames`` (uint8, 16 fps)."""
        height, width = self.size
        source = f"{frames.shape[2]}x{frames.shape[1]}"
        if (frames.shape[1], frames.shape[2]) != (height, width):
            self.notes.append(f"{name}: resized from {source} to {width}x{height} (fill, centre crop)")
        if len(frames) > self.num_frames:
            self.notes.append(f"{name}: {len(frames)} frames trimmed to the clip's {self.num_frames}")
        pixels = clip_pixels(frames, self.num_frames, height, width)
        encoded_count = pixels.shape[1]
        codec = VideoCodec(self.pipe.vae)
        reference = codec.encode(pixels.unsqueeze(0))[0].float().cpu()
        first, stop = round(window[0] * FPS), min(round(window[1] * FPS), encoded_count)
        latents = _held_latents(first, stop, reference.shape[1])
        if not latents:
            raise ValueError(f"{name}: the window {window[0]:g}-{window[1]:g} s covers no whole latent frame "
                             "(4 frames at 16 fps); widen it")  # fmt: skip
        self.video_condition = self.video_condition or LatentCondition.empty(self.video_shape)
        self.video_condition.place(0, reference, latents.start, latents.start, len(latents), strength)
        frame_first, frame_last = _frame_span(latents.start)[0], _frame_span(latents[-1])[1]
        if len(frames) == 1:
            self.notes.append(f"{name}: held as the first frame")
        elif frame_first > 0 or frame_last + 1 < self.num_frames:
            self.notes.append(f"{name}: frames {frame_first}-{frame_last} held; frames outside are generated")
        if strength == 0:
            kept = ((pixels[:, frame_first : frame_last + 1] + 1) / 2).permute(1, 2, 3, 0)
            self.paste_frames.append((frame_first, kept))

    # ------------------------------------------------------------------ sound
    def hold_audio(self, waveform: np.ndarray, strength: float, window: tuple[float, float], name: str) -> None:
        """Hold the audio latents entirely inside ``window`` (seconds) at the encoded ``waveform`` (16 kHz)."""
        clip_seconds = self.num_samples / SAMPLE_RATE
        if len(waveform) > self.num_samples + SAMPLE_RATE // 100:
            self.notes.append(f"{name}: {len(waveform) / SAMPLE_RATE:.2f} s trimmed to the clip's {clip_seconds:.2f} s")
        codec = AudioCodec(self.pipe.audio_vae, self.pipe.vocoder)
        reference, fitted = clip_audio_latents(codec, waveform, self.num_frames)
        first = math.ceil(window[0] / AUDIO_LATENT_SECONDS - 1e-9)
        stop = min(math.floor(window[1] / AUDIO_LATENT_SECONDS + 1e-9), reference.shape[1])
        if stop <= first:
            raise ValueError(f"{name}: the window {window[0]:g}-{window[1]:g} s is shorter than one audio latent "
                             f"({AUDIO_LATENT_SECONDS} s); widen it")  # fmt: skip
        self.audio_condition = self.audio_condition or LatentCondition.empty(self.audio_shape)
        self.audio_condition.place(0, reference, first, first, stop - first, strength)
        if window[0] > 0 or window[1] < clip_seconds:
            self.notes.append(f"{name}: {window[0]:.2f}-{window[1]:.2f} s held; the rest of the sound is generated")
        if strength == 0:
            a, b = round(window[0] * SAMPLE_RATE), round(window[1] * SAMPLE_RATE)
            self.paste_audio = (a, fitted[a:b].copy())

    # ------------------------------------------------------------------ output
    def paste(self, frames: torch.Tensor | None, audio: torch.Tensor | None):
        """Put the user's own frames / waveform back where they were held exactly (strength 0)."""
        if frames is not None:
            for first, kept in self.paste_frames:
                frames[:, first : first + len(kept)] = kept.to(frames)
        if audio is not None and self.paste_audio is not None:
            start, kept = self.paste_audio
            kept = torch.from_numpy(kept).to(audio)
            end = start + len(kept)
            fade = torch.linspace(0, 1, CROSSFADE, dtype=audio.dtype)
            blended = kept.expand(audio.shape[0], -1).clone()
            if start > 0 and len(kept) > 2 * CROSSFADE:
                blended[:, :CROSSFADE] = audio[:, start : start + CROSSFADE] * (1 - fade) + kept[:CROSSFADE] * fade
            if end < audio.shape[1] and len(kept) > 2 * CROSSFADE:
                blended[:, -CROSSFADE:] = kept[-CROSSFADE:] * (1 - fade) + audio[:, end - CROSSFADE : end] * fade
            audio[:, start:end] = blended
        return frames, audio


def _default_frames(seconds: float) -> int:
    """The longest 4k+1 frame count a clip of ``seconds`` fills, at most 81 (5 s)."""
    return min(81, 4 * ((int(seconds * FPS + 1e-6) - 1) // 4) + 1)


def generate_conditioned(pipe, call: dict, video=None, audio=None, image=None, strength: float = 0.0,
                         extend_to: float | None = None):  # fmt: skip
    """``JavisDiTPipeline.__call__`` with user media; ``call`` holds the call's other arguments."""
    video, audio, image = as_input(video), as_input(audio), as_input(image)
    mode, output_type = call["mode"], call["output_type"]
    if video is not None and image is not None:
        raise ValueError("give either video= or image=, not both (image= is the first frame of a generated video)")
    if (video is not None or audio is not None) and mode != "t2av":
        raise ValueError(f"video= and audio= need mode 't2av' (one modality is kept, the other generated; "
                         f"got {mode!r})")  # fmt: skip
    if image is not None and mode == "t2a":
        raise ValueError("image= needs mode 't2av' or 't2v' (it is the first frame of the video)")
    if extend_to is not None:
        if not isinstance(extend_to, (int, float)) or not 0 < extend_to <= MAX_EXTEND_SECONDS:
            raise ValueError(f"extend_to must be a number of seconds in (0, {MAX_EXTEND_SECONDS:g}] "
                             f"(got {extend_to!r})")  # fmt: skip
        if audio is not None:
            raise ValueError("extend_to continues a clip: give video= (a clip with its sound) or nothing, not audio=")
        if mode != "t2av":
            raise ValueError(f"extend_to needs mode 't2av' (the sound is kept continuous at each seam; got {mode!r})")
        if output_type == "latent":
            raise ValueError("extend_to stitches decoded windows: use output_type 'np' or 'pt'")
    if pipe.vae is None or (mode != "t2v" and (pipe.audio_vae is None or pipe.vocoder is None)):
        raise ValueError("conditioning on media needs the pipeline's VAEs to encode it")

    notes: list[str] = []
    video_clip = read_video_input(video) if video is not None else None
    audio_clip = read_audio_input(audio) if audio is not None else None
    picture = read_image_input(image) if image is not None else None
    for clip in (video_clip, audio_clip):
        notes += clip.notes if clip is not None else []

    call = dict(call)
    if call["height"] is None and call["width"] is None:
        shown = video_clip.frames[0] if video_clip is not None else picture
        if shown is not None:
            call["aspect_ratio"] = _closest_aspect(shown.shape[0], shown.shape[1])
            notes.append(f"size follows the input's aspect: {call['resolution']} at H:W {call['aspect_ratio']}")
    if call["duration"] is None and call["num_frames"] is None and extend_to is None:
        given = video_clip or audio_clip
        if given is not None:
            call["num_frames"] = _default_frames(given.seconds)
            frames = call["num_frames"]
            notes.append(f"clip length follows the input: {frames} frames ({frames / FPS:.2f} s)")
    height, width, num_frames = pipe.resolve_size(call["resolution"], call["aspect_ratio"], call["height"],
                                                  call["width"], call["duration"], call["num_frames"])  # fmt: skip
    call.update(height=height, width=width, num_frames=num_frames, duration=None)

    if extend_to is not None:
        return _extend(pipe, call, video_clip, picture, image, strength, float(extend_to), notes)

    run = ConditionedRun(pipe, height, width, num_frames)
    clip_seconds = num_frames / FPS
    if video_clip is not None:
        if video_clip.audio is not None:
            notes.append("video: its own sound track is not used (a new one is generated)")
        window = _window(video, "video", video_clip.seconds, clip_seconds)
        run.hold_frames(video_clip.frames, _strength(video, strength, "video"), window, "video")
    if picture is not None:
        run.hold_frames(picture[None], _strength(image, strength, "image"), (0.0, 1 / FPS), "image")
    if audio_clip is not None:
        window = _window(audio, "audio", audio_clip.seconds, clip_seconds)
        run.hold_audio(audio_clip.audio, _strength(audio, strength, "audio"), window, "audio")
    notes += run.notes
    return _sample(pipe, call, run, notes, output_type)


def _sample(pipe, call: dict, run: ConditionedRun, notes: list[str], output_type: str):
    from .pipeline_javisdit import JavisDiTPipelineOutput

    result = pipe(**{**call, "output_type": "latent" if output_type == "latent" else "pt", "return_dict": True},
                  video_condition=run.video_condition, audio_condition=run.audio_condition)  # fmt: skip
    frames, audio = result.frames, result.audio
    if output_type == "latent":
        notes.append("output_type 'latent': the inputs are not pasted back")
    else:
        frames, audio = run.paste(frames, audio)
        if output_type == "np":
            frames = None if frames is None else frames.cpu().numpy()
            audio = None if audio is None else audio.cpu().numpy()
    if not call["return_dict"]:
        return frames, audio
    return JavisDiTPipelineOutput(frames=frames, audio=audio, report=tuple(notes))


def _extend(pipe, call, video_clip: Clip | None, picture, image, strength, extend_to, notes):
    """Chain windows of ``num_frames`` until the clip lasts ``extend_to`` seconds (see the module docstring)."""
    from .pipeline_javisdit import JavisDiTPipelineOutput

    num_frames, height, width = call["num_frames"], call["height"], call["width"]
    overlap_frames = 4 * (EXTEND_OVERLAP_LATENTS - 1) + 1
    if num_frames <= overlap_frames + 4:
        raise ValueError(f"extend_to needs windows longer than {overlap_frames + 4} frames (got {num_frames})")
    overlap_samples = overlap_frames * SAMPLE_RATE // FPS
    if video_clip is not None:
        if video_clip.audio is None:
            raise ValueError("video: extending a clip needs its sound track (this file has none); "
                             "give it sound first (video-to-audio), then extend")  # fmt: skip
        size = decoded_video_size(height, width, spatial_stride_of(pipe.vae))
        frames = ((fit_frames(video_clip.frames, *size) + 1) / 2).permute(1, 2, 3, 0)
        waveform = fit_audio(video_clip.audio, round(len(frames) / FPS * SAMPLE_RATE))
        notes.append(f"extend: continuing the given clip ({len(frames) / FPS:.2f} s)")
        if len(frames) < overlap_frames:
            raise ValueError(f"video: {len(frames)} frames is too short to continue; at least {overlap_frames}")
    else:
        first = ConditionedRun(pipe, height, width, num_frames)
        if picture is not None:
            first.hold_frames(picture[None], _strength(image, strength, "image"), (0.0, 1 / FPS), "image")
        notes += first.notes
        result = _sample(pipe, {**call, "return_dict": True}, first, [], "pt")
        frames, waveform = result.frames[0].cpu(), result.audio[0].cpu().numpy()
    target_frames = round(extend_to * FPS)
    windows = 0
    while len(frames) < target_frames:
        if pipe.interrupt:
            notes.append("extend: interrupted; the clip so far is returned")
            break
        run = ConditionedRun(pipe, height, width, num_frames)
        tail = (frames[-overlap_frames:] * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        run.hold_frames(tail, 0.0, (0.0, overlap_frames / FPS), "extend")
        run.hold_audio(waveform[-overlap_samples:], 0.0, (0.0, overlap_frames / FPS), "extend")
        result = pipe(**{**call, "output_type": "pt", "return_dict": True},
                      video_condition=run.video_condition, audio_condition=run.audio_condition)  # fmt: skip
        new_frames, new_audio = result.frames[0].cpu(), result.audio[0].cpu().numpy()
        frames = torch.cat([frames, new_frames[overlap_frames:]])
        fade = np.linspace(0, 1, CROSSFADE, dtype=np.float32)
        seam = new_audio[overlap_samples - CROSSFADE : overlap_samples]
        waveform = np.concatenate([waveform[:-CROSSFADE], waveform[-CROSSFADE:] * (1 - fade) + seam * fade,
                                   new_audio[overlap_samples:]])  # fmt: skip
        windows += 1
    frames = frames[:target_frames]
    waveform = fit_audio(waveform, round(len(frames) / FPS * SAMPLE_RATE))
    notes.append(f"extend: {windows} window(s) of {num_frames} frames chained, {overlap_frames} frames "
                 f"({overlap_frames / FPS:.4g} s) of picture and sound carried over each seam; "
                 f"{len(frames) / FPS:.2f} s")  # fmt: skip
    frames, audio = frames[None], torch.from_numpy(np.ascontiguousarray(waveform))[None]
    if call["output_type"] == "np":
        frames, audio = frames.numpy(), audio.numpy()
    if not call["return_dict"]:
        return frames, audio
    return JavisDiTPipelineOutput(frames=frames, audio=audio, report=tuple(notes))
