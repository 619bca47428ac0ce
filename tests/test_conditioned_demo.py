"""Video to audio and audio to video with the shipped demo model (``load_pipeline("demo")``) on clips of its world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from javis_core.demo import world as demo_world
from javis_core.demo.model import DEMO_DIR, DEMO_SIZE, demo_available
from javis_core.loaders.pipeline_loader import load_pipeline
from javis_core.codecs.video import VideoCodec


@pytest.fixture(scope="module")
def demo():
    assert demo_available(DEMO_DIR), f"the shipped demo model is missing from {DEMO_DIR}"
    pipe = load_pipeline("demo")
    pipe.set_progress_bar_config(disable=True)
    height, width, frames = pipe.resolve_size(DEMO_SIZE["resolution"], DEMO_SIZE["aspect_ratio"], None, None, 2, None)
    size = VideoCodec(pipe.vae).decoded_size(height, width)
    scene = demo_world.sample_scene(np.random.default_rng(0), frames / 16, "drum", "red")
    picture, sound = demo_world.render(scene.kind, scene.colour, scene.event_times, frames, *size)
    return pipe, picture, sound


def test_demo_sound_for_a_given_picture_keeps_the_picture(demo):
    pipe, picture, _ = demo
    out = pipe("a red drum is hit", video=picture, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
               **DEMO_SIZE)  # fmt: skip
    assert out.frames.shape[1:4] == picture.shape[:3]
    assert np.abs(out.frames[0] - picture / 255).max() < 1e-6
    assert out.audio.shape == (1, 33000) and out.audio.std() > 1e-3


def test_demo_picture_for_a_given_sound_keeps_the_sound(demo):
    pipe, picture, sound = demo
    out = pipe("a red drum is hit", audio=sound, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
               **DEMO_SIZE)  # fmt: skip
    assert out.frames.shape[1] == 33 and np.abs(out.audio[0] - sound).max() < 1e-6
    assert demo_world.classify_kind((out.frames[0] * 255).round().astype(np.uint8)) == "drum"
