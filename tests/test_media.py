"""Tests for javis_core.media: mp4 (H.264 + AAC) and wav writing, probing and reading with PyAV."""

import wave

import numpy as np
import pytest
import torch

from javis_core.media import probe, read_video, to_uint8_frames, write_video, write_wav

FPS, SR = 16, 16000


def _moving_square(t: int, h: int, w: int) -> np.ndarray:
    frames = np.full((t, h, w, 3), 40, np.uint8)
    for i in range(t):
        x = 2 * i
        frames[i, 8:24, x : x + 16] = (230, 60, 30)
    return frames


def _tone(num_samples: int, freq: float = 440.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(num_samples) / SR).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = _moving_square(33, 64, 96)
    audio = _tone(33 * SR // FPS)
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_video(path, frames, fps=FPS, audio=audio, sample_rate=SR)
    return path, frames, audio


def test_to_uint8_frames_matches_official_mapping():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0]).view(1, 1, 1, 6).expand(3, 1, 1, 6)
    out = to_uint8_frames(x)
    assert out.shape == (1, 1, 6, 3) and out.dtype == torch.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 255]
    assert to_uint8_frames(torch.zeros(2, 3, 4, 6, 8)).shape == (2, 4, 6, 8, 3)
    with pytest.raises(ValueError):
        to_uint8_frames(torch.zeros(4, 4, 6, 8))


def test_probe_reports_browser_friendly_streams(clip):
    path, frames, _ = clip
    info = probe(path)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac" and info["audio_sample_rate"] == SR and info["audio_channels"] == 2
    assert info["fps"] == pytest.approx(FPS)
    assert info["num_frames"] == 33 and (info["height"], info["width"]) == (64, 96)
    assert abs(info["audio_duration"] - 33 / FPS) <= 1 / FPS
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart


def test_read_video_round_trip(clip):
    path, frames, audio = clip
    video, wav, fps = read_video(path)
    assert fps == pytest.approx(FPS)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert np.abs(video.astype(np.int16) - frames).mean() < 3.0
    assert wav.dtype == np.float32 and abs(wav.size - audio.size) <= SR // FPS
    n = min(wav.size, audio.size)
    # AAC keeps the tone aligned in time (priming removed) and roughly at the same level
    assert np.corrcoef(wav[1000 : n - 1000], audio[1000 : n - 1000])[0, 1] > 0.99
    half, _, half_fps = read_video(path, fps=8)
    assert half_fps == 8 and half.shape[0] in (16, 17)
    np.testing.assert_array_equal(half[1], video[2])


def test_float_channel_first_and_odd_size(tmp_path):
    frames = _moving_square(9, 35, 51)
    as_float = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # (3, T, H, W) in [0, 1]
    path = write_video(tmp_path / "odd.mp4", as_float, fps=FPS)
    info = probe(path)
    assert (info["height"], info["width"]) == (36, 52) and info["num_frames"] == 9
    assert info["audio_codec"] is None
    video, wav, _ = read_video(path)
    assert wav.size == 0
    assert np.abs(video[:, :35, :51].astype(np.int16) - frames).mean() < 3.0


def test_audio_padded_to_video_duration(tmp_path):
    path = write_video(tmp_path / "short_audio.mp4", _moving_square(17, 32, 32), fps=FPS, audio=_tone(4000))
    info = probe(path)
    assert abs(info["audio_duration"] - 17 / FPS) <= 1 / FPS
    path = write_video(tmp_path / "long_audio.mp4", _moving_square(17, 32, 32), fps=FPS, audio=_tone(40000))
    assert abs(probe(path)["audio_duration"] - 17 / FPS) <= 1 / FPS


def test_write_wav(tmp_path):
    audio = _tone(12345)
    path = write_wav(tmp_path / "a.wav", torch.from_numpy(audio), sample_rate=SR)
    with wave.open(str(path), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, SR, 12345)
        pcm = np.frombuffer(f.readframes(12345), "<i2")
    np.testing.assert_allclose(pcm / 32767.0, audio, atol=1 / 32767)
