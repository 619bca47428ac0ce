"""Audio-visual synchrony without downloaded models: audio onsets against visual events.

    python -m javis_core.sync_metric clip.mp4 [--json]
    python -m javis_core.sync_metric clips/*.mp4 --chance      # is this set of clips in sync beyond chance?

Audio onsets are peaks of the positive log-energy flux in 10 ms frames; visual events are flashes (sharp rises of
the mean brightness) and impacts (the centre of the moving part of the picture turns back while moving fast). Each audio onset is matched to the
nearest visual event: the mean signed and absolute offsets (ms) say how far the sound is from the picture, and an
AV-Align style score (Yariv et al.) counts the onsets and events that have a partner within one video frame,
2 * matched / (onsets + events), in [0, 1].

A small offset alone does not show synchrony: a picture with many events has one near any sound. The chance level
of a set of clips is each clip's picture against the sound of every other clip (of the same group, for example the
same object, when groups are given): ``against_chance`` reports the clips' own figures, the chance figures, and a
95% bootstrap interval over clips for the difference.
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


@dataclass
class ChanceComparison:
    clips: int  # clips with an offset of their own and at least one partner's
    own_abs_offset_ms: float | None
    chance_abs_offset_ms: float | None
    offset_difference_ms: float | None  # own minus chance: negative = closer to its own sound than to others'
    offset_interval_ms: tuple[float, float] | None  # 95% bootstrap interval of that difference
    own_av_align: float
    chance_av_align: float
    av_align_difference: float
    av_align_interval: tuple[float, float]


def _mean_and_interval(differences: list[float], resamples: int, rng: np.random.Generator):
    if not differences:
        return None, None
    values = np.asarray(differences)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), (float(low), float(high))


def against_chance(onsets: list[list[float]], events: list[list[float]], fps: float | list[float],
                   groups: list | None = None, resamples: int = 2000, seed: int = 0) -> ChanceComparison:  # fmt: skip
    """Each clip's picture (``events[i]``) against its own sound (``onsets[i]``) and against the sound of every other
    clip in its group (all other clips without ``groups``); differences are per clip, then averaged. ``fps`` is one
    frame rate for all clips or one per clip (the picture's sets the matching tolerance)."""
    rates = list(fps) if isinstance(fps, (list, tuple)) else [fps] * len(events)
    if len(onsets) != len(events) or len(rates) != len(events):
        raise ValueError(f"onsets, events and fps have {len(onsets)}, {len(events)} and {len(rates)} clips: "
                         "give one entry of each per clip")
    groups = list(groups) if groups is not None else [0] * len(events)
    if len(groups) != len(events):
        raise ValueError(f"groups has {len(groups)} entries for {len(events)} clips")
    partners = [[j for j in range(len(events)) if j != i and groups[j] == groups[i]] for i in range(len(events))]
    if not any(partners):
        raise ValueError("no clip has a partner: the chance level needs at least two clips in a group")
    own_offsets, chance_offsets, own_align, chance_align = [], [], [], []
    for i, others in enumerate(partners):
        if not others:
            continue
        own = compare(onsets[i], events[i], rates[i])
        shuffled = [compare(onsets[j], events[i], rates[i]) for j in others]
        own_align.append(own.av_align)
        chance_align.append(float(np.mean([r.av_align for r in shuffled])))
        offsets = [r.mean_abs_offset_ms for r in shuffled if r.mean_abs_offset_ms is not None]
        if own.mean_abs_offset_ms is not None and offsets:
            own_offsets.append(own.mean_abs_offset_ms)
            chance_offsets.append(float(np.mean(offsets)))
    rng = np.random.default_rng(seed)
    offset_difference, offset_interval = _mean_and_interval(
        [a - b for a, b in zip(own_offsets, chance_offsets)], resamples, rng
    )
    align_difference, align_interval = _mean_and_interval(
        [a - b for a, b in zip(own_align, chance_align)], resamples, rng
    )
    return ChanceComparison(
        clips=len(own_offsets),
        own_abs_offset_ms=float(np.mean(own_offsets)) if own_offsets else None,
        chance_abs_offset_ms=float(np.mean(chance_offsets)) if chance_offsets else None,
        offset_difference_ms=offset_difference,
        offset_interval_ms=offset_interval,
        own_av_align=float(np.mean(own_align)),
        chance_av_align=float(np.mean(chance_align)),
        av_align_difference=align_difference,
        av_align_interval=align_interval,
    )


def describe_chance(result: ChanceComparison) -> str:
    """One line: own against chance, with the 95% interval of each difference."""
    offset = "no clip with events"
    if result.offset_difference_ms is not None:
        low, high = result.offset_interval_ms
        offset = (f"mean abs offset {result.own_abs_offset_ms:.0f} ms against {result.chance_abs_offset_ms:.0f} ms "
                  f"({result.offset_difference_ms:+.0f} ms, 95% interval {low:+.0f} to {high:+.0f})")  # fmt: skip
    low, high = result.av_align_interval
    return (f"{offset}; AV-Align {result.own_av_align:.2f} against {result.chance_av_align:.2f} "
            f"({result.av_align_difference:+.2f}, {low:+.2f} to {high:+.2f}); {result.clips} clips"
            + (" (under 10: the intervals are rough)" if result.clips < 10 else ""))  # fmt: skip


def clip_onsets(waveform: np.ndarray, sample_rate: int, num_frames: int, fps: float) -> list[float]:
    """Audio onsets of a clip of ``num_frames`` frames; those after the last frame (plus half a frame) are left out:
    the picture cannot show their event."""
    end = (num_frames - 0.5) / fps
    return [t for t in audio_onsets(waveform, sample_rate) if t <= end]


def measure(frames: np.ndarray, fps: float, waveform: np.ndarray, sample_rate: int) -> SyncReport:
    return compare(clip_onsets(waveform, sample_rate, len(frames), fps), visual_events(frames, fps), fps)


def measure_file(path: str) -> SyncReport:
    return _measure_file_with_rate(path)[0]


def _measure_file_with_rate(path: str) -> tuple[SyncReport, float]:
    from .media import read_video

    frames, audio, fps = read_video(path)
    if audio.size == 0:
        raise ValueError(f"{path} has no audio stream")
    return measure(frames, fps, audio, 16000), fps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m javis_core.sync_metric", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="mp4 files with sound")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--chance", action="store_true",
                        help="also compare each clip's picture with the other clips' sounds (the chance level)")
    args = parser.parse_args(argv)
    if args.chance and len(args.videos) < 2:
        parser.error(f"--chance needs at least 2 clips (got {len(args.videos)})")
    status = 0
    reports, rates = [], []
    for path in args.videos:
        try:
            report, fps = _measure_file_with_rate(path)
        except (ValueError, OSError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            status = 2
            continue
        reports.append(report)
        rates.append(fps)
        if args.json:
            print(json.dumps({"file": path, **asdict(report)}))
        else:
            offset = "n/a" if report.mean_offset_ms is None else f"{report.mean_offset_ms:+.0f} ms"
            print(f"{path}: {len(report.audio_onsets_s)} audio onsets, {len(report.visual_events_s)} visual events, "
                  f"mean offset {offset}, AV-Align {report.av_align:.2f}")  # fmt: skip
    if args.chance and len(reports) >= 2:
        result = against_chance([r.audio_onsets_s for r in reports], [r.visual_events_s for r in reports], rates)
        if args.json:
            print(json.dumps({"against_chance": asdict(result)}))
        else:
            print(f"against the other clips' sounds: {describe_chance(result)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
