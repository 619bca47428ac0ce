"""The synchrony metric on clips whose events are known: a light that blinks with a beep, in sync or late."""

from __future__ import annotations

import numpy as np
import pytest

from javis_core import sync_metric
from javis_core.media import write_video

FPS, RATE = 16, 16000
BLINKS_S = [0.5, 1.25, 2.0, 2.75]


def blink_clip(audio_delay_s: float = 0.0, seconds: float = 3.5):
    num_frames = int(seconds * FPS)
    frames = np.full((num_frames, 32, 48, 3), 20, np.uint8)
    for blink in BLINKS_S:
        start = int(round(blink * FPS))
        frames[start : start + 2, 8:24, 16:32] = 230  # the light is on for two frames
    t = np.arange(int(seconds * RATE)) / RATE
    audio = 0.003 * np.random.default_rng(0).standard_normal(t.size)
    for blink in BLINKS_S:
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
