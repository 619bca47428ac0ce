"""Reading and writing of audio-video clips with PyAV (docs/official.md §5, "Output saving").

Videos are written as H.264 (yuv420p) + AAC mp4 with the moov atom at the front so browsers can stream them;
mono audio is duplicated to stereo like the official saver. No ffmpeg/ffprobe binary is needed.
"""

from __future__ import annotations

import os
import wave
from fractions import Fraction

import av
import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(B?, 3, T, H, W) float in [-1, 1] -> uint8 (B?, T, H, W, 3) on CPU.

    Same mapping as the official saver (docs/official.md §5): clamp to [-1, 1], then ``(x + 1) / 2 * 255 + 0.5``, truncated.
    """
    video = torch.as_tensor(video)
    if video.dim() not in (4, 5) or video.shape[-4] != 3:
        raise ValueError(f"video must have shape (B?, 3, T, H, W), got {tuple(video.shape)}")
    x = video.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    x = ((x + 1.0) / 2.0 * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.movedim(-4, -1)


def _frames_to_uint8_thwc(frames: ArrayLike) -> np.ndarray:
    """Accept uint8 or float frames as (T, H, W, 3) or (3, T, H, W); floats are in [0, 1] (pipeline output)."""
    t = torch.as_tensor(frames).detach().cpu()
    if t.dim() != 4:
        raise ValueError(f"frames must be 4-D (T, H, W, 3) or (3, T, H, W), got {tuple(t.shape)}")
    if t.shape[-1] == 3:
        layout = "thwc"
    elif t.shape[0] == 3:
        layout = "cthw"
    else:
        raise ValueError(f"frames must be (T, H, W, 3) or (3, T, H, W), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return (t if layout == "thwc" else t.movedim(0, -1)).contiguous().numpy()
    if not t.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {t.dtype}")
    if layout == "cthw":
        t = t.movedim(0, -1)
    # x = (v + 1) / 2 for decoder output v in [-1, 1]: the official saver's (v + 1) / 2 * 255 + 0.5, truncated.
    return (t.float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).contiguous().numpy()


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column when H or W is odd."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _audio_to_mono(audio: ArrayLike) -> np.ndarray:
    a = torch.as_tensor(audio).detach().to("cpu", torch.float32)
    if a.dim() == 2 and a.shape[0] == 1:
        a = a[0]
    if a.dim() != 1:
        raise ValueError(f"audio must be mono, shape (N,) or (1, N), got {tuple(a.shape)}")
    return a.numpy()


def write_video(
    path: str | os.PathLike,
    frames: ArrayLike,
    fps: float = 16,
    audio: ArrayLike | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "medium",
) -> str:
    """Write an H.264/yuv420p mp4 (+ stereo AAC from mono ``audio``) playable in browsers.

    ``frames``: uint8 or float in [0, 1] (as the pipeline returns them), shaped (T, H, W, 3) or (3, T, H, W)
    (channel-last wins if both fit).
    Odd H/W are padded to even by edge replication. ``audio`` (mono float in [-1, 1]) is zero-padded or trimmed to
    exactly T / fps seconds so both streams have the same duration.
    """
    path = os.fspath(path)
    video = _pad_to_even(_frames_to_uint8_thwc(frames))
    num_frames, height, width, _ = video.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.codec_context.time_base = 1 / rate
        vstream.options = {"crf": str(crf), "preset": preset}
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        for i, img in enumerate(video):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            mono = _audio_to_mono(audio)
            n = int(round(num_frames / float(rate) * sample_rate))
            mono = np.pad(mono[:n], (0, max(0, n - mono.shape[0])))
            stereo = np.ascontiguousarray(np.stack([mono, mono]).clip(-1.0, 1.0).astype(np.float32))
            chunk = astream.codec_context.frame_size or 1024
            for start in range(0, n, chunk):
                aframe = av.AudioFrame.from_ndarray(stereo[:, start : start + chunk], format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = sample_rate, start, Fraction(1, sample_rate)
                container.mux(astream.encode(aframe))
            container.mux(astream.encode(None))
    return path


def write_wav(path: str | os.PathLike, waveform: ArrayLike, sample_rate: int = 16000) -> str:
    """Write a 16-bit PCM wav; ``waveform`` is float in [-1, 1], shaped (N,) mono or (C, N)."""
    path = os.fspath(path)
    w = torch.as_tensor(waveform).detach().to("cpu", torch.float32)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.dim() != 2:
        raise ValueError(f"waveform must have shape (N,) or (C, N), got {tuple(w.shape)}")
    pcm = (w.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16).T.contiguous().numpy()  # interleaved (N, C)
    with wave.open(path, "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.astype("<i2").tobytes())
    return path


def read_video(
    path: str | os.PathLike, fps: float | None = None, sample_rate: int = 16000
) -> tuple[np.ndarray, np.ndarray, float]:
    """Decode a clip: (frames uint8 (T, H, W, 3), mono float32 audio at ``sample_rate``, video fps).

    With ``fps`` the frames are resampled in time (nearest earlier frame) and the returned fps is ``fps``.
    Audio is resampled to s16 and the first channel kept, as the official loader does (docs/official.md §3.2 step 1);
    an empty array is returned when there is no audio stream.
    """
    with av.open(os.fspath(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        vstream = container.streams.video[0]
        src_fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        frames, times = [], []
        for frame in container.decode(vstream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time) if frame.time is not None else len(times) / src_fps)
    video = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    out_fps = src_fps
    if fps is not None and len(frames):
        t0 = times[0]
        duration = len(frames) / src_fps if src_fps else times[-1] - t0
        count = max(1, int(round(duration * fps)))
        target = t0 + np.arange(count) / fps
        idx = np.searchsorted(np.asarray(times), target + 1e-6, side="right") - 1
        video, out_fps = video[np.clip(idx, 0, len(frames) - 1)], float(fps)
    return video, _read_audio(path, sample_rate), out_fps


def _read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            return np.zeros(0, np.float32)
        stream = container.streams.audio[0]
        # decoders skip the AAC priming but keep the padding of the last frame: trim to the container duration
        keep = int(round(stream.duration * stream.time_base * sample_rate)) if stream.duration else None
        resampler = av.AudioResampler(format="s16p", rate=sample_rate)
        chunks = []
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler ignore timestamp gaps/priming offsets
            chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
        chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    if not chunks:
        return np.zeros(0, np.float32)
    return (np.concatenate(chunks)[:keep].astype(np.float32) / 32768.0).astype(np.float32)


def probe(path: str | os.PathLike) -> dict:
    """Stream facts of a media file using PyAV only.

    Keys: video_codec, pix_fmt, fps, num_frames, width, height, video_duration, audio_codec, audio_sample_rate,
    audio_channels, audio_duration (seconds; ``None`` entries when a stream is missing).
    """
    info: dict = dict.fromkeys(
        ["video_codec", "pix_fmt", "fps", "num_frames", "width", "height", "video_duration",
         "audio_codec", "audio_sample_rate", "audio_channels", "audio_duration"]
    )
    with av.open(os.fspath(path)) as container:
        if container.streams.video:
            v = container.streams.video[0]
            cc = v.codec_context
            info.update(
                video_codec=cc.name,
                pix_fmt=cc.pix_fmt,
                fps=float(v.average_rate or v.guessed_rate or 0),
                width=cc.width,
                height=cc.height,
                num_frames=v.frames or None,
                video_duration=float(v.duration * v.time_base) if v.duration else None,
            )
        if container.streams.audio:
            a = container.streams.audio[0]
            info.update(
                audio_codec=a.codec_context.name,
                audio_sample_rate=a.codec_context.sample_rate,
                audio_channels=a.codec_context.channels,
                audio_duration=float(a.duration * a.time_base) if a.duration else None,
            )
        if info["num_frames"] is None and container.streams.video:
            info["num_frames"] = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    return info
