"""The synchrony metric on clips whose events are known: a light that blinks with a beep, in sync or late."""

from __future__ import annotations

import json

import numpy as np
import pytest

from javis_core.evaluation import sync_metric
from javis_core.media import write_video

FPS, RATE = 16, 16000
BLINKS_S = [0.5, 1.25, 2.0, 2.75]


def blink_clip(audio_delay_s: float = 0.0, seconds: float = 3.5, blinks: list[float] = BLINKS_S):
    num_frames = int(seconds * FPS)
    frames = np.full((num_frames, 32, 48, 3), 20, np.uint8)
    for blink in blinks:
        start = int(round(blink * FPS))
        frames[start : start + 2, 8:24, 16:32] = 230  # the light is on for two frames
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.003 * np.random.default_rng(0).standard_normal(t.size)
    for blink in blinks:
        onset = t - blink - audio_delay_s
        audio += np.where(onset >= 0, 0.6 * np.exp(-onset * 25) * np.sin(2 * np.pi * 880 * onset), 0.0)
    return frames, audio.astype(np.float32)


def test_events_found_at_their_times():
    frames, audio = blink_clip()
    assert sync_metric.audio_onsets(audio, RATE) == pytest.approx(BLINKS_S, abs=0.02)
    events = sync_metric.visual_events(frames, FPS)
    assert all(any(abs(e - b) <= 1 / FPS for e in events) for b in BLINKS_S)


def test_in_sync_beats_late_sound(tmp_path):
    frames, audio = blink_clip()
    in_sync = sync_metric.measure(frames, FPS, audio, RATE)
    assert abs(in_sync.mean_offset_ms) < 40 and in_sync.av_align > 0.6
    frames, audio = blink_clip(audio_delay_s=0.25)
    late = sync_metric.measure(frames, FPS, audio, RATE)
    assert late.mean_offset_ms == pytest.approx(250, abs=40)
    assert late.av_align < in_sync.av_align


def test_command_line_on_an_mp4(tmp_path, capsys):
    frames, audio = blink_clip(audio_delay_s=0.25)
    path = write_video(tmp_path / "late.mp4", frames, fps=FPS, audio=audio)
    silent = write_video(tmp_path / "silent.mp4", frames, fps=FPS)
    assert sync_metric.main([path, "--json"]) == 0
    assert '"mean_offset_ms": 2' in capsys.readouterr().out  # about +250 ms
    assert sync_metric.main([silent]) == 2
    assert "has no audio stream" in capsys.readouterr().err


def random_times(rng: np.random.Generator, count: int = 3) -> list[float]:
    """``count`` event times in a 3 s clip, at least 0.4 s apart."""
    while True:
        times = sorted(rng.uniform(0.2, 2.8, count))
        if min(np.diff(times)) >= 0.4:
            return [float(t) for t in times]


def test_against_chance_tells_sync_from_coincidence():
    rng = np.random.default_rng(1)
    events = [random_times(rng) for _ in range(30)]
    in_sync = sync_metric.against_chance([[t + 0.01 for t in e] for e in events], events, FPS)
    assert in_sync.clips == 30
    assert in_sync.own_abs_offset_ms == pytest.approx(10, abs=1)
    assert in_sync.chance_abs_offset_ms > 150
    assert in_sync.offset_interval_ms[1] < 0 and in_sync.av_align_interval[0] > 0.5
    unrelated = sync_metric.against_chance([random_times(rng) for _ in events], events, FPS)
    low, high = unrelated.offset_interval_ms
    assert low < 0 < high and abs(unrelated.offset_difference_ms) < abs(in_sync.offset_difference_ms) / 5
    assert unrelated.av_align_interval[0] < 0 < unrelated.av_align_interval[1]


def test_against_chance_pairs_only_within_groups():
    events = [[0.5, 1.5], [0.6, 1.6], [2.0, 2.5], [2.1, 2.6]]
    onsets = [list(e) for e in events]
    grouped = sync_metric.against_chance(onsets, events, FPS, groups=["a", "a", "b", "b"])
    assert grouped.chance_abs_offset_ms == pytest.approx(100)  # each partner's sound is 0.1 s off
    mixed = sync_metric.against_chance(onsets, events, FPS)
    assert mixed.chance_abs_offset_ms > grouped.chance_abs_offset_ms
    with pytest.raises(ValueError, match="needs at least two clips in a group"):
        sync_metric.against_chance(onsets, events, FPS, groups=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="one entry of each per clip"):
        sync_metric.against_chance(onsets[:3], events, FPS)


def test_command_line_chance_level(tmp_path, capsys):
    paths = []
    for i, blinks in enumerate([[0.5, 1.5, 2.5], [0.8, 2.2], [0.3, 1.1, 1.9, 2.9]]):
        frames, audio = blink_clip(blinks=blinks)
        paths.append(write_video(tmp_path / f"{i}.mp4", frames, fps=FPS, audio=audio))
    assert sync_metric.main([*paths, "--chance"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("against the other clips' sounds: mean abs offset")
    assert line.endswith("; 3 clips (under 10: the intervals are rough)")
    assert sync_metric.main([*paths, "--chance", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])["against_chance"]
    assert result["own_abs_offset_ms"] < 40 < result["chance_abs_offset_ms"]
    with pytest.raises(SystemExit) as exit_info:
        sync_metric.main([paths[0], "--chance"])
    assert exit_info.value.code == 2
    assert "--chance needs at least 2 clips (got 1)" in capsys.readouterr().err
