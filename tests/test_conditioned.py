"""Conditioned generation from user media on the tiny pipeline: the held modality comes back as given, the
sampler keeps it at the reference, the other is generated; extension; bad inputs give named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from javis_core.codecs.audio import AudioCodec, mel_frames_for
from javis_core.media import read_video, write_video, write_wav
from javis_core.media_inputs import MediaInput
from javis_core.tiny import tiny_pipeline
from javis_core.codecs.video import VideoCodec

SMALL = dict(prompt="a drum", height=64, width=96, num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def media():
    rng = np.random.default_rng(0)
    frames = (rng.random((13, 64, 96, 3)) * 255).astype(np.uint8)
    t = np.arange(13000) / 16000
    sound = (0.3 * np.sin(2 * np.pi * 300 * t) * (t % 0.25 < 0.05)).astype(np.float32)
    return frames, sound


def test_video_to_audio_keeps_the_picture(pipe, media):
    frames, _ = media
    out = pipe(video=frames, generator=gen(), **SMALL)
    assert out.frames.shape == (1, 13, 64, 96, 3) and out.audio.shape == (1, 13000)
    assert np.abs(out.frames[0] - frames / 255).max() < 1e-6  # the user's own frames, no VAE round trip
    assert out.audio.std() > 1e-3
    assert any("clip length follows the input: 13 frames" in note for note in out.report)
    latents = pipe(video=frames, generator=gen(), output_type="latent", **SMALL).frames
    reference = VideoCodec(pipe.vae).encode(torch.from_numpy(frames).permute(3, 0, 1, 2)[None] / 127.5 - 1)
    assert torch.allclose(latents, reference, atol=1e-5)  # held at the reference by the sampler


def test_audio_to_video_keeps_the_sound(pipe, media):
    _, sound = media
    out = pipe(audio=MediaInput(sound, window=(0.0, 0.5)), num_frames=13, generator=gen(), **SMALL)
    assert np.abs(out.audio[0, 160:7840] - sound[160:7840]).max() < 1e-6  # the user's waveform (crossfade at 0.5 s)
    assert np.abs(out.audio[0, 8200:] - sound[8200:]).max() > 1e-3  # after the window: generated
    latents = pipe(audio=MediaInput(sound, window=(0.0, 0.5)), num_frames=13, generator=gen(), output_type="latent",
                   **SMALL).audio  # fmt: skip
    codec = AudioCodec(pipe.audio_vae, pipe.vocoder)
    reference = codec.encode_mel(codec.waveform_to_mel(torch.from_numpy(sound)[None], mel_frames_for(13)),
                                 sample_posterior=False)  # fmt: skip
    assert torch.allclose(latents[:, :, :12], reference[:, :, :12], atol=1e-5)  # 0.5 s = 12.5 latents: 12 held
    assert (latents[:, :, 13:] - reference[:, :, 13:]).abs().max() > 1e-2


def test_image_is_the_first_frame_and_strength_edits(pipe, media):
    frames, _ = media
    out = pipe(image=frames[0], num_frames=9, generator=gen(), **SMALL)
    assert np.abs(out.frames[0, 0] - frames[0] / 255).max() < 1e-6
    assert "image: held as the first frame" in out.report
    edited = pipe(video=frames, strength=0.5, generator=gen(), **SMALL)
    assert np.abs(edited.frames[0] - frames / 255).max() > 1e-2  # an edit, not the input


def test_file_inputs_are_resampled_resized_and_reported(pipe, media, tmp_path):
    frames, sound = media
    big = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # 128x192
    write_video(tmp_path / "in.mp4", np.concatenate([big, big]), fps=24, audio=np.tile(sound, 2)[:17000])
    out = pipe(video=str(tmp_path / "in.mp4"), generator=gen(), **SMALL)
    assert out.frames.shape[1] == 17  # 26 frames at 24 fps -> 17 at 16 fps
    report = " | ".join(out.report)
    assert "resampled from 24 fps to 16 fps" in report and "resized from 192x128 to 96x64" in report
    assert "its own sound track is not used" in report
    write_wav(tmp_path / "in.wav", np.tile(sound, 2), 8000)  # 26000 samples at 8 kHz = 3.25 s
    out = pipe(audio=str(tmp_path / "in.wav"), num_frames=17, generator=gen(), **SMALL)
    report = " | ".join(out.report)
    assert "resampled from 8000 Hz to 16000 Hz" in report and "trimmed to the clip's 1.06 s" in report


def test_extension_chains_windows_with_the_first_window_unchanged(pipe):
    first = pipe(num_frames=17, generator=gen(3), **SMALL)
    out = pipe(num_frames=17, extend_to=1.5, generator=gen(3), **SMALL)
    assert out.frames.shape == (1, 24, 64, 96, 3) and out.audio.shape == (1, 24000)
    assert np.abs(out.frames[0, :17] - first.frames[0]).max() < 1e-6
    assert np.abs(out.audio[0, : 17000 - 160] - first.audio[0, : 17000 - 160]).max() < 1e-6
    assert "extend: 1 window(s) of 17 frames chained" in out.report[-1]  # 17 + 8 new frames, cut to 24


def test_extending_a_given_clip_keeps_it(pipe, media, tmp_path):
    frames, sound = media
    clip = np.concatenate([frames, frames])  # 26 frames
    write_video(tmp_path / "clip.mp4", clip, fps=16, audio=np.tile(sound, 2))
    out = pipe(video=str(tmp_path / "clip.mp4"), num_frames=17, extend_to=2.0, generator=gen(), **SMALL)
    assert out.frames.shape[1] == 32 and "extend: continuing the given clip (1.62 s)" in out.report
    decoded, decoded_sound, _ = read_video(tmp_path / "clip.mp4", fps=16)
    assert np.abs(out.frames[0, :26] - decoded / 255).max() < 1e-6  # the given clip as decoded, untouched
    assert np.abs(out.audio[0, : 26000 - 160] - decoded_sound[: 26000 - 160]).max() < 1e-6
    write_video(tmp_path / "silent.mp4", clip, fps=16)
    with pytest.raises(ValueError, match="video: extending a clip needs its sound track"):
        pipe(video=str(tmp_path / "silent.mp4"), extend_to=3, **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(video="/nonexistent/clip.mp4"), "video: file /nonexistent/clip.mp4 does not exist"),
        (dict(audio=MediaInput(np.zeros(16000), rate=100)), "audio: rate must be from 4000 to 192000 Hz"),
        (dict(audio=np.zeros(3000, np.float32)), "audio: 0.19 s is too short; at least 0.3125 s"),
        (dict(video=np.zeros((5, 8, 8), np.uint8)), r"video: an array must be shaped \(T, H, W, 3\)"),
        (dict(video=np.zeros((9, 8, 8, 3)), strength=1.5), "video strength must be a number from 0"),
        (dict(video=np.zeros((9, 8, 8, 3)), mode="t2v"), "video= and audio= need mode 't2av'"),
        (dict(extend_to=100), r"extend_to must be a number of seconds in \(0, 60\]"),
    ],
)
def test_bad_inputs_name_the_input(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**{**SMALL, **kwargs})


def test_bad_files_name_the_input_and_what_is_accepted(pipe, media, tmp_path):
    frames, sound = media
    write_wav(tmp_path / "sound.wav", sound)
    with pytest.raises(ValueError, match=r"video: .*sound.wav has no video stream; accepted: a video file"):
        pipe(video=str(tmp_path / "sound.wav"), **SMALL)
    write_video(tmp_path / "silent.mp4", frames, fps=16)
    with pytest.raises(ValueError, match=r"audio: .*silent.mp4 has no audio stream; accepted: a sound file"):
        pipe(audio=str(tmp_path / "silent.mp4"), **SMALL)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match=r"video: cannot read .*junk.mp4"):
        pipe(video=str(tmp_path / "junk.mp4"), **SMALL)
    with pytest.raises(ValueError, match=r"image: cannot read .*junk.mp4 as a picture"):
        pipe(image=str(tmp_path / "junk.mp4"), **SMALL)
