"""A synthetic sounding-video world whose captions need text and whose sounds need timing.

Three object kinds, each with its own motion and sound, in four colours, on a dark background:

* ``ball``: falls and bounces on the floor; a short click at every impact;
* ``light``: a lamp that blinks; a beep while it is on;
* ``drum``: a drum skin that flashes when hit; a low thump at every hit.

Events happen at known times (returned with the clip), so the synchrony of generated clips can be measured against
ground truth, and the caption names the colour, the object and its sound.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .sizes import SAMPLE_RATE

KINDS = ("ball", "light", "drum")
COLOURS = {"red": (225, 45, 45), "green": (45, 205, 70), "blue": (55, 90, 235), "yellow": (235, 215, 45)}
CAPTIONS = {
    "ball": "a {colour} ball bounces on the floor, clicking at each bounce",
    "light": "a {colour} light blinks on and off with a beep",
    "drum": "a {colour} drum is hit with a deep thump",
}


@dataclass
class Scene:
    kind: str
    colour: str
    caption: str
    event_times: list[float]  # seconds: impacts, blink onsets or hits


def _events(rng: np.random.Generator, seconds: float, kind: str) -> list[float]:
    if kind == "ball":  # a bounce period of 0.5-0.8 s, first impact after one fall
        period = float(rng.uniform(0.5, 0.8))
        return [t for t in np.arange(period / 2, seconds - 0.1, period).tolist()]
    times, t = [], float(rng.uniform(0.2, 0.5))
    while t < seconds - 0.2:
        times.append(t)
        t += float(rng.uniform(0.45, 0.9))
    return times


def render(kind: str, colour: str, events: list[float], num_frames: int, height: int, width: int,
           fps: float = 16) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(frames uint8 (T, H, W, 3), waveform float32 (N,)) of one scene."""
    rgb = np.array(COLOURS[colour], np.uint8)
    frames = np.full((num_frames, height, width, 3), 18, np.uint8)
    size = max(4, min(height, width) // 4)
    top, left = (height - size) // 2, (width - size) // 2
    times = np.arange(num_frames) / fps
    for index, t in enumerate(times):
        if kind == "ball":
            period = events[1] - events[0] if len(events) > 1 else 0.6
            phase = ((t - events[0]) / period) % 1.0 if events else 0.0
            height_above = 4 * phase * (1 - phase)  # parabola: 0 at impacts, 1 at the top
            y = int(round((height - size) * (1 - 0.8 * height_above)))
            frames[index, y : y + size, left : left + size] = rgb
        elif kind == "light":
            on = any(0 <= t - e < 0.2 for e in events)
            frames[index, top : top + size, left : left + size] = rgb if on else rgb // 5
        else:
            since = min((t - e for e in events if t >= e), default=math.inf)
            glow = math.exp(-since * 12) if math.isfinite(since) else 0.0
            shade = (rgb // 4 + (rgb - rgb // 4) * glow).astype(np.uint8)
            frames[index, top : top + size, left : left + size] = shade
    samples = int(round(num_frames / fps * SAMPLE_RATE))
    t = np.arange(samples) / SAMPLE_RATE
    noise = np.random.default_rng(len(events)).standard_normal(samples)
    audio = 0.003 * noise
    for event in events:
        since = np.clip(t - event, 0.0, None)
        active = t >= event
        if kind == "ball":
            audio += np.where(active, 0.7 * np.exp(-since * 300) * noise, 0.0)
        elif kind == "light":
            audio += np.where(active & (since < 0.2), 0.4 * np.sin(2 * math.pi * 1200 * since), 0.0)
        else:
            audio += np.where(active, 0.8 * np.exp(-since * 18) * np.sin(2 * math.pi * 70 * since), 0.0)
    return frames, np.clip(audio, -1, 1).astype(np.float32)


def sample_scene(rng: np.random.Generator, seconds: float, kind: str | None = None, colour: str | None = None) -> Scene:
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    colour = colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
    return Scene(kind, colour, CAPTIONS[kind].format(colour=colour), _events(rng, seconds, kind))


def write_dataset(out_dir: str | Path, num_clips: int, num_frames: int = 33, height: int = 64, width: int = 64,
                  fps: float = 16, seed: int = 0) -> Path:  # fmt: skip
    """``clips/NNNN.mp4`` + ``manifest.csv`` (the training columns) + ``events.jsonl`` (ground-truth events)."""
    from .media import write_video

    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, events = [], []
    for index in range(num_clips):
        scene = sample_scene(rng, num_frames / fps)
        frames, audio = render(scene.kind, scene.colour, scene.event_times, num_frames, height, width, fps)
        name = f"clips/{index:04d}.mp4"
        write_video(out_dir / name, frames, fps=fps, audio=audio)
        rows.append({"path": name, "audio_path": "", "text": scene.caption, "num_frames": num_frames,
                     "height": height, "width": width, "fps": fps})  # fmt: skip
        events.append({"path": name, **asdict(scene)})
    with (out_dir / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return out_dir / "manifest.csv"
