"""The studio's conditioned tasks (video to audio, audio to video, image to audio+video, extend) through
app_support and the page's handlers, on the tiny pipeline."""

from __future__ import annotations

import numpy as np
import pytest

import app
from javis_core.studio.session import GenerationSettings, ModelConfig, ModelManager, Studio, StudioError
from javis_core.media import probe, read_video, write_video, write_wav
from javis_core.tiny import save_tiny_pipeline

BASE = dict(prompt="a lamp hums", mode="t2av", duration=2, resolution="240p", aspect_ratio="landscape",
            num_inference_steps=1, seed=3)  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    frames = np.zeros((9, 96, 64, 3), np.uint8)
    frames[:, 30:60, 20:44] = 200
    write_video(folder / "clip.mp4", frames, fps=16)
    write_wav(folder / "sound.wav", 0.2 * np.sin(np.arange(12000) / 5).astype(np.float32), 16000)
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    return folder


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tiny = save_tiny_pipeline(tmp_path_factory.mktemp("app") / "tiny")
    return Studio(ModelManager(ModelConfig(model=str(tiny), device="cpu")), tmp_path_factory.mktemp("out"))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(task="v2a"), "Video to audio needs a video: upload one first."),
        (dict(task="a2v", audio_in="{clip}"), "The uploaded file cannot be used: audio: {clip} has no audio stream"),
        (dict(task="i2av", image_in="{broken}"), "The uploaded file cannot be used: image: cannot read {broken}"),
        (dict(task="v2a", video_in="{clip}", mode="t2a"), "Video to audio needs the mode Audio + video"),
        (dict(task="v2a", video_in="{clip}", strength=2), "Strength must be a number from 0 to 1"),
        (dict(task="extend", video_in="{clip}"), "Extend a clip needs a target length"),
        (dict(task="text", extend_to=90), "Extend to (s) must be a number above 2 up to 60"),
        (dict(task="draw"), "Task must be one of text, v2a, a2v, i2av, extend"),
    ],
)
def test_bad_conditioning_names_the_control(media, changes, message):
    fill = {"clip": str(media / "clip.mp4"), "broken": str(media / "broken.png")}
    changes = {k: v.format(**fill) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(StudioError) as error:
        GenerationSettings.from_ui(**{**BASE, **changes})
    assert message.format(**fill) in str(error.value)


def test_settings_carry_the_media_to_the_pipeline_and_the_command(media):
    settings = GenerationSettings.from_ui(**BASE, task="a2v", audio_in=str(media / "sound.wav"), strength=0.25)
    kwargs = settings.pipeline_kwargs()
    assert kwargs["audio"] == str(media / "sound.wav") and kwargs["strength"] == 0.25
    assert kwargs["duration"] is None and kwargs["video"] is None  # the clip follows the sound's length
    command = settings.cli_command(ModelConfig(), demo=True)
    assert f"--audio-in {media / 'sound.wav'}" in command and "--strength 0.25" in command
    assert "--duration" not in command
    text = GenerationSettings.from_ui(**BASE, strength=0.7)  # strength means nothing without media
    assert text.strength == 0 and "audio" not in text.pipeline_kwargs()


def test_video_to_audio_in_the_studio_keeps_the_picture(studio, media):
    settings = GenerationSettings.from_ui(**BASE, task="v2a", video_in=str(media / "clip.mp4"))
    result = studio.generate(settings, "s1")
    info = probe(result.video)
    assert info["num_frames"] == 9 and info["audio_codec"] == "aac"
    assert any("resized from 64x96" in note for note in result.settings["report"])
    assert "--video-in" in result.settings["command"]
    frames, sound, _ = read_video(result.video)
    assert sound.std() > 1e-3
    assert abs(float(frames[:, frames.shape[1] // 2, frames.shape[2] // 2].mean()) - 200) < 8  # the user's square


def test_task_selector_shows_the_matching_inputs(studio):
    on_task = app.build_demo(studio).handlers["task"]
    video, audio, image, strength, extend, mode = on_task("a2v")
    assert (video.visible, audio.visible, image.visible) == (False, True, False)
    assert strength.visible and not extend.visible and mode.value == "t2av"
    video, audio, image, strength, extend, mode = on_task("text")
    assert not (video.visible or audio.visible or image.visible or strength.visible)
    assert extend.visible
