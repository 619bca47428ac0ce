"""The synthetic demo world: captions, known event times, and sound and picture that agree on them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from javis_core.demo import world as demo_world
from javis_core.evaluation import sync_metric
from javis_core.media import probe, read_video

FPS = 16


@pytest.mark.parametrize("kind", demo_world.KINDS)
def test_sound_onsets_fall_on_the_known_events(kind):
    rng = np.random.default_rng(1)
    scene = demo_world.sample_scene(rng, 4.0, kind=kind, colour="blue")
    assert kind in scene.caption and "blue" in scene.caption and len(scene.event_times) >= 3
    frames, audio = demo_world.render(kind, "blue", scene.event_times, 64, 48, 64, FPS)
    assert frames.shape == (64, 48, 64, 3) and audio.shape == (64_000,)
    onsets = sync_metric.audio_onsets(audio, 16000)
    assert onsets == pytest.approx(scene.event_times, abs=0.02)


@pytest.mark.parametrize("kind", ["light", "drum"])
def test_visual_events_are_found_where_they_happen(kind):
    scene = demo_world.sample_scene(np.random.default_rng(2), 4.0, kind=kind, colour="red")
    frames, audio = demo_world.render(kind, "red", scene.event_times, 64, 48, 64, FPS)
    report = sync_metric.measure(frames, FPS, audio, 16000)
    assert abs(report.mean_offset_ms) <= 1000 / FPS  # within a frame
    assert report.av_align > 0.8


def test_ball_is_on_the_floor_at_each_impact():
    scene = demo_world.sample_scene(np.random.default_rng(3), 4.0, kind="ball", colour="green")
    frames, _ = demo_world.render("ball", "green", scene.event_times, 64, 48, 64, FPS)
    lowest_row = [np.nonzero(frame.max(axis=(1, 2)) > 100)[0].max() for frame in frames]
    period = scene.event_times[1] - scene.event_times[0]
    for event in scene.event_times:
        assert lowest_row[int(round(event * FPS))] >= 40  # at the floor (bottom row 47), to the nearest frame
        top_frame = int(round((event + period / 2) * FPS))
        if top_frame < len(frames):
            assert lowest_row[top_frame] < 30  # well above it half-way between impacts


def test_dataset_files(tmp_path):
    manifest = demo_world.write_dataset(tmp_path, num_clips=3, num_frames=17, height=32, width=32, seed=0)
    rows = list(csv.DictReader(manifest.open()))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(rows) == len(events) == 3
    assert rows[0]["text"] == events[0]["caption"] and rows[0]["path"] == events[0]["path"]
    info = probe(tmp_path / rows[0]["path"])
    assert info["num_frames"] == 17 and info["audio_codec"] == "aac"


def test_dataset_workers_write_the_same_clips(tmp_path):
    one = demo_world.write_dataset(tmp_path / "one", num_clips=4, num_frames=9, height=32, width=32, seed=3)
    two = demo_world.write_dataset(tmp_path / "two", num_clips=4, num_frames=9, height=32, width=32, seed=3, workers=2)
    assert one.read_text() == two.read_text()
    assert (tmp_path / "one/events.jsonl").read_text() == (tmp_path / "two/events.jsonl").read_text()
    for row in csv.DictReader(one.open()):
        first, first_audio, _ = read_video(tmp_path / "one" / row["path"])
        second, second_audio, _ = read_video(tmp_path / "two" / row["path"])
        assert np.array_equal(first, second) and np.allclose(first_audio, second_audio)
