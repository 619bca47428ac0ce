"""Audio-visual synchrony without downloaded models: audio onsets against visual events.

    python -m javis_core.sync_metric clip.mp4 [--json]

Audio onsets are peaks of the positive log-energy flux in 10 ms frames; visual events are flashes (sharp rises of
the mean brightness) and impacts (the centre of the moving part of the picture turns back while moving fast). Each audio onset is matched to the
nearest visual event: the mean signed and absolute offsets (ms) say how far the sound is from the picture, and an
AV-Align style score (Yariv et al.) counts the onsets and events that have a partner within one video frame,
2 * matched / (onsets + events), in [0, 1].
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np

HOP_S = 0.01


@dataclass
class SyncReport:
    audio_onsets_s: list[float]
    visual_events_s: list[float]
    mean_offset_ms: float | None  # audio minus picture: positive = sound late
    mean_abs_offset_ms: float | None
    av_align: float


def _peaks(curve: np.ndarray, threshold: float, min_gap: int) -> list[int]:
    """Local maxima above ``threshold``, at least ``min_gap`` samples apart (the larger one wins)."""
    candidates = [i for i in range(len(curve)) if curve[i] > threshold
                  and curve[i] >= curve[max(i - 1, 0)] and curve[i] >= curve[min(i + 1, len(curve) - 1)]]  # fmt: skip
    chosen: list[int] = []
    for index in sorted(candidates, key=lambda i: -curve[i]):
        if all(abs(index - other) >= min_gap for other in chosen):
            chosen.append(index)
    return sorted(chosen)


def audio_onsets(waveform: np.ndarray, sample_rate: int, min_gap_s: float = 0.2, sensitivity: float = 3.0,
                 min_level_db: float = -20.0) -> list[float]:  # fmt: skip
    """Onset times (s): where the 10 ms log-energy rises sharply (flux above median + sensitivity x MAD, and at
    least a 4.5x energy jump so that noise flicker does not count) to within ``min_level_db`` of the clip's
    loudest frame (so that ripples in a decaying sound are not onsets)."""
    hop = int(round(sample_rate * HOP_S))
    frames = len(waveform) // hop
    if frames < 3:
        return []
    energy = np.square(waveform[: frames * hop].reshape(frames, hop)).mean(axis=1)
    log_energy = np.log(energy + 1e-8)
    flux = np.maximum(np.diff(log_energy, prepend=log_energy[0]), 0)
    median = np.median(flux)
    spread = np.median(np.abs(flux - median)) + 1e-3
    threshold = max(median + sensitivity * spread, 1.5)
    loud = log_energy.max() + min_level_db / 10 * np.log(10)
    # the level is judged a frame later: an onset's first 10 ms frame may hold only part of the attack
    level = np.maximum(log_energy, np.concatenate([log_energy[1:], log_energy[-1:]]))
    return [i * HOP_S for i in _peaks(flux, threshold, int(min_gap_s / HOP_S)) if level[i] >= loud]


def _robust_threshold(curve: np.ndarray, sensitivity: float, floor: float) -> float:
    median = np.median(curve)
    return max(median + sensitivity * (np.median(np.abs(curve - median)) + 1e-6), floor)


def visual_events(frames: np.ndarray, fps: float, min_gap_s: float = 0.25, sensitivity: float = 3.0) -> list[float]:
    """Event times (s) of a (T, H, W, 3) uint8 clip: flashes (the mean brightness rises sharply: a light comes on,
    a drum skin lights up, a cut) and impacts (the centre of what moves turns back while moving fast).

    The moving part is the difference to the clip's median frame; its centre's change of velocity at a reversal,
    in frame heights per frame, is weighted by how much is moving. Each cue is scaled by its own robust threshold
    and the peaks of the larger one are kept; within ``min_gap_s`` only the strongest (first, on ties) counts, so a
    light's switching off shortly after it came on is not a second event."""
    if len(frames) < 3:
        return []
    gray = frames.astype(np.float32).mean(axis=3) / 255.0
    flash = np.maximum(np.diff(gray.mean(axis=(1, 2)), prepend=gray[0].mean()), 0.0)

    moving = np.abs(gray - np.median(gray, axis=0))
    mass = moving.sum(axis=(1, 2)) + 1e-8
    rows = np.arange(gray.shape[1]) / gray.shape[1]
    cols = np.arange(gray.shape[2]) / gray.shape[1]
    centre = np.stack([(moving.sum(axis=2) * rows).sum(axis=1), (moving.sum(axis=1) * cols).sum(axis=1)], 1) / mass[:, None]
    velocity = np.diff(centre, axis=0)  # velocity[t - 1]: frame t-1 -> t
    turn = np.zeros(len(gray))
    weight = mass / mass.max()
    for t in range(1, len(gray) - 1):
        before, after = velocity[t - 1], velocity[t]
        if float(before @ after) < 0:
            turn[t] = np.linalg.norm(after - before) * weight[t - 1 : t + 2].min()

    curve = np.maximum(flash / _robust_threshold(flash, sensitivity, 0.003),
                       turn / _robust_threshold(turn, sensitivity, 0.05))  # fmt: skip
    return [i / fps for i in _peaks(curve, 1.0, max(1, int(round(min_gap_s * fps))))]


def compare(onsets: list[float], events: list[float], fps: float) -> SyncReport:
    """Offsets of each onset to its nearest event, and the share of both with a partner within one frame."""
    tolerance = 1.0 / fps + 1e-9
    offsets = [min((onset - event for event in events), key=abs) for onset in onsets] if events else []
    matched_onsets = sum(1 for offset in offsets if abs(offset) <= tolerance)
    matched_events = sum(1 for event in events if any(abs(onset - event) <= tolerance for onset in onsets))
    total = len(onsets) + len(events)
    return SyncReport(
        audio_onsets_s=[round(t, 3) for t in onsets],
        visual_events_s=[round(t, 3) for t in events],
        mean_offset_ms=float(np.mean(offsets) * 1000) if offsets else None,
        mean_abs_offset_ms=float(np.mean(np.abs(offsets)) * 1000) if offsets else None,
        av_align=(matched_onsets + matched_events) / total if total else 0.0,
    )


def clip_onsets(waveform: np.ndarray, sample_rate: int, num_frames: int, fps: float) -> list[float]:
    """Audio onsets of a clip of ``num_frames`` frames; those after the last frame (plus half a frame) are left out:
    the picture cannot show their event."""
    end = (num_frames - 0.5) / fps
    return [t for t in audio_onsets(waveform, sample_rate) if t <= end]


def measure(frames: np.ndarray, fps: float, waveform: np.ndarray, sample_rate: int) -> SyncReport:
    return compare(clip_onsets(waveform, sample_rate, len(frames), fps), visual_events(frames, fps), fps)


def measure_file(path: str) -> SyncReport:
    from .media import read_video

    frames, audio, fps = read_video(path)
    if audio.size == 0:
        raise ValueError(f"{path} has no audio stream")
    return measure(frames, fps, audio, 16000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m javis_core.sync_metric", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="mp4 files with sound")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    args = parser.parse_args(argv)
    status = 0
    for path in args.videos:
        try:
            report = measure_file(path)
        except (ValueError, OSError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            print(json.dumps({"file": path, **asdict(report)}))
        else:
            offset = "n/a" if report.mean_offset_ms is None else f"{report.mean_offset_ms:+.0f} ms"
            print(f"{path}: {len(report.audio_onsets_s)} audio onsets, {len(report.visual_events_s)} visual events, "
                  f"mean offset {offset}, AV-Align {report.av_align:.2f}")  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
