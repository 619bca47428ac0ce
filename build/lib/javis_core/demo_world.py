"""A synthetic sounding-video world whose captions need text and whose sounds need timing.

Three object kinds, each with its own motion and sound, in four colours, on a dark background:

* ``ball``: a square that falls and bounces on the floor in the middle; a short click at every impact;
* ``light``: a lamp high up in the middle that blinks; a 1.2 kHz beep while it is on;
* ``drum``: a wide drum skin low in the frame that flashes when hit; a 70 Hz thump at every hit.

Events happen at known times (returned with the clip), so the synchrony of generated clips can be measured against
ground truth. Captions name the colour, the object and its sound in one of several phrasings (templates x endings),
so that a set of held-out caption strings (:func:`held_out_captions`) can test generalisation to unseen text.
:func:`classify_clip` reads the kind, colour and sound back from any clip of this world (generated ones included).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .sizes import SAMPLE_RATE
from .utils import write_csv

KINDS = ("ball", "light", "drum")
COLOURS = {"red": (225, 45, 45), "green": (45, 205, 70), "blue": (55, 90, 235), "yellow": (235, 215, 45)}
SOUNDS = {"ball": "click", "light": "beep", "drum": "thump"}
TEMPLATES = {
    "ball": (
        "a {colour} ball bounces on the floor, clicking at each bounce",
        "a bouncing {colour} ball that clicks every time it lands",
        "{colour} ball bouncing up and down with sharp clicks",
        "the {colour} ball drops and rebounds, tapping the ground",
        "clicks from a {colour} rubber ball bouncing",
        "a {colour} ball hopping on the ground with a click at each landing",
    ),
    "light": (
        "a {colour} light blinks on and off with a beep",
        "a blinking {colour} lamp beeping each time it turns on",
        "{colour} signal light flashing with short beeps",
        "a {colour} bulb flickers on with a beep and goes dark again",
        "beeping {colour} light pulsing in the dark",
        "a {colour} lamp that beeps while it flashes",
    ),
    "drum": (
        "a {colour} drum is hit with a deep thump",
        "someone strikes a {colour} drum, low booming thuds",
        "{colour} bass drum beaten, each hit a deep thump",
        "a {colour} drum pounding with heavy low thumps",
        "deep drum hits on a {colour} drum",
        "a {colour} drum skin flashes with every low thud",
    ),
}
ENDINGS = ("", " in a dark room", " on a black background", ", close up", " at night")


@dataclass
class Scene:
    kind: str
    colour: str
    caption: str
    event_times: list[float]  # seconds: impacts, blink onsets or hits


def all_captions(kind: str, colour: str) -> list[str]:
    """Every phrasing of a (kind, colour) scene: templates x endings."""
    return [t.format(colour=colour) + e for t in TEMPLATES[kind] for e in ENDINGS]


def held_out_captions(count: int = 50, seed: int = 1234) -> list[dict]:
    """``count`` distinct caption strings, kinds and colours in turn, never used for training data
    (:func:`sample_scene` with ``exclude_held_out``); each a dict with kind, colour and caption."""
    rng = np.random.default_rng(seed)
    chosen: list[dict] = []
    for index in range(count):
        kind, colour = KINDS[index % len(KINDS)], list(COLOURS)[(index // len(KINDS)) % len(COLOURS)]
        options = [c for c in all_captions(kind, colour) if c not in {x["caption"] for x in chosen}]
        chosen.append({"kind": kind, "colour": colour, "caption": options[int(rng.integers(len(options)))]})
    return chosen


_HELD_OUT = frozenset(c["caption"] for c in held_out_captions())


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
    left = (width - size) // 2
    lamp_top = height // 8
    drum_h, drum_w = max(2, size // 2), min(width, 2 * size)
    drum_top, drum_left = height - height // 8 - drum_h, (width - drum_w) // 2
    times = np.arange(num_frames) / fps
    half_frame = 0.5 / fps
    for index, t in enumerate(times):
        if kind == "ball":
            period = events[1] - events[0] if len(events) > 1 else 0.6
            phase = ((t - events[0]) / period) % 1.0 if events else 0.0
            height_above = 4 * phase * (1 - phase)  # parabola: 0 at impacts, 1 at the top
            y = int(round((height - size) * (1 - 0.8 * height_above)))
            frames[index, y : y + size, left : left + size] = rgb
        elif kind == "light":
            on = any(0 <= t + half_frame - e < 0.2 for e in events)  # lit from the frame nearest the onset
            frames[index, lamp_top : lamp_top + size, left : left + size] = rgb if on else rgb // 5
        else:
            since = min((t - e for e in events if t + half_frame >= e), default=math.inf)
            since = max(since, 0.0)
            glow = math.exp(-since * 12) if math.isfinite(since) else 0.0
            shade = (rgb // 4 + (rgb - rgb // 4) * glow).astype(np.uint8)
            frames[index, drum_top : drum_top + drum_h, drum_left : drum_left + drum_w] = shade
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


def sample_scene(rng: np.random.Generator, seconds: float, kind: str | None = None, colour: str | None = None,
                 caption: str | None = None, exclude_held_out: bool = True) -> Scene:  # fmt: skip
    """A random scene (kind, colour and phrasing drawn unless given); training captions avoid the held-out ones."""
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    colour = colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if caption is None:
        options = [c for c in all_captions(kind, colour) if not (exclude_held_out and c in _HELD_OUT)]
        caption = options[int(rng.integers(len(options)))]
    return Scene(kind, colour, caption, _events(rng, seconds, kind))


def _write_clip(out_dir: Path, name: str, scene: Scene, num_frames: int, height: int, width: int, fps: float) -> None:
    from .media import write_video

    frames, audio = render(scene.kind, scene.colour, scene.event_times, num_frames, height, width, fps)
    write_video(out_dir / name, frames, fps=fps, audio=audio)


def write_dataset(out_dir: str | Path, num_clips: int, num_frames: int = 33, height: int = 64, width: int = 64,
                  fps: float = 16, seed: int = 0, workers: int = 1) -> Path:  # fmt: skip
    """``clips/NNNN.mp4`` + ``manifest.csv`` (the training columns) + ``events.jsonl`` (ground-truth events).

    Scenes are drawn in order from ``seed``; ``workers`` processes render and encode them (same files for any
    count)."""
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, num_frames / fps) for _ in range(num_clips)]
    names = [f"clips/{index:04d}.mp4" for index in range(num_clips)]
    jobs = [(out_dir, name, scene, num_frames, height, width, fps) for name, scene in zip(names, scenes)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_clip, *zip(*jobs), chunksize=16))
    else:
        for job in jobs:
            _write_clip(*job)
    rows = [{"path": name, "audio_path": "", "text": scene.caption, "num_frames": num_frames, "height": height,
             "width": width, "fps": fps} for name, scene in zip(names, scenes)]  # fmt: skip
    events = [{"path": name, **asdict(scene)} for name, scene in zip(names, scenes)]
    (out_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return write_csv(out_dir / "manifest.csv", list(rows[0]), rows)


# ---------------------------------------------------------------------------------------------------- reading clips
BACKGROUND = 18


def classify_colour(frames: np.ndarray) -> str:
    """The named colour nearest (cosine of RGB) to the mean of the clip's lit pixels."""
    pixels = frames.reshape(-1, 3).astype(np.float32)
    lit = pixels[pixels.max(axis=1) > BACKGROUND + 40]
    if len(lit) == 0:
        lit = pixels
    mean = lit.mean(axis=0) - BACKGROUND
    names = list(COLOURS)
    refs = np.array([COLOURS[n] for n in names], np.float32) - BACKGROUND
    cosine = refs @ mean / (np.linalg.norm(refs, axis=1) * np.linalg.norm(mean) + 1e-6)
    return names[int(np.argmax(cosine))]


def classify_kind(frames: np.ndarray) -> str:
    """Ball, light or drum from where the lit pixels are over the clip: a ball sweeps a tall column, a lamp sits
    high, a drum low."""
    glow = np.clip(frames.astype(np.float32).max(axis=3) - BACKGROUND, 0, None).max(axis=0)  # (H, W) brightest
    mask = glow > 0.35 * glow.max() if glow.max() > 0 else np.ones_like(glow, bool)
    rows = np.nonzero(mask.any(axis=1))[0]
    height = frames.shape[1]
    if (rows.max() - rows.min() + 1) / height > 0.45:
        return "ball"
    centre = (rows.min() + rows.max()) / 2 / height
    return "light" if centre < 0.5 else "drum"


def classify_sound(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """Thump, beep or click from where the energy is: below 250 Hz, at 0.9-1.5 kHz, or spread (broadband)."""
    spectrum = np.square(np.abs(np.fft.rfft(audio.astype(np.float64))))
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    total = spectrum.sum() + 1e-12
    low = spectrum[freqs < 250].sum() / total
    beep = spectrum[(freqs >= 900) & (freqs <= 1500)].sum() / total
    return ("thump", "beep", "click")[int(np.argmax([low, beep, 1 - low - beep]))]


def classify_clip(frames: np.ndarray, audio: np.ndarray | None, sample_rate: int = SAMPLE_RATE) -> dict:
    """{"kind", "colour", "sound"} read from a clip (uint8 (T, H, W, 3) frames and its waveform)."""
    result = {"kind": classify_kind(frames), "colour": classify_colour(frames)}
    if audio is not None and len(audio):
        result["sound"] = classify_sound(audio, sample_rate)
    return result
