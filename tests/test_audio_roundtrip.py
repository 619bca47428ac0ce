"""Waveform -> mel -> audio latents -> mel -> waveform keeps shapes, lengths and the timing of events.

The codec here is tiny and random, so it cannot reproduce the sound; what it must keep is where things happen:
a tone burst added at time t changes the mel at t / 10 ms, the latents at t / 40 ms and the decoded waveform
around t (a wrong hop, padding or trim would move them).
"""

from __future__ import annotations

import pytest
import torch

from javis_core.codecs.audio import AudioCodec, mel_frames_for, num_audio_samples, tiny_audio_codec_components

RATE = 16000
BURST_S = 0.05


def burst_train(onsets_s: list[float], length: int, freq: float = 1000.0) -> torch.Tensor:
    t = torch.arange(length) / RATE
    wave = torch.zeros(length)
    for onset in onsets_s:
        inside = (t >= onset) & (t < onset + BURST_S)
        wave[inside] = 0.5 * torch.sin(2 * torch.pi * freq * (t[inside] - onset))
    return wave


@pytest.fixture(scope="module")
def codec():
    return AudioCodec(*tiny_audio_codec_components(seed=0))


def test_round_trip_shapes(codec):
    frames = 65  # 4.0625 s at 16 fps
    length, mel_frames = num_audio_samples(frames), mel_frames_for(frames)
    assert (length, mel_frames) == (65_000, 416)
    wave = burst_train([0.5, 1.5, 2.5, 3.5], length)[None]
    mel = codec.waveform_to_mel(wave, mel_frames)
    latents = codec.encode(wave, sample_posterior=False, num_mel_frames=mel_frames)
    decoded = codec.decode(latents, num_samples=length)
    assert mel.shape == (1, 1, 416, 64)
    assert latents.shape == (1, 8, 104, 16)
    assert decoded.shape == (1, 65_000) and decoded.dtype == torch.float32


@pytest.mark.parametrize("onset", [0.9, 2.0, 3.8])
def test_round_trip_keeps_onsets_in_place(codec, onset):
    length = num_audio_samples(65)
    base = burst_train([0.5, 1.5, 2.5, 3.5], length)
    waves = torch.stack([base, base + burst_train([onset], length)])

    mel = codec.waveform_to_mel(waves, 416)
    mel_change = (mel[1] - mel[0]).abs().sum(dim=(0, 2))
    first_mel_frame = int((mel_change > 0.5 * mel_change.max()).nonzero()[0])
    assert abs(first_mel_frame - onset * 100) <= 3  # 10 ms frames, centred 64 ms window

    latents = codec.encode(waves, sample_posterior=False, num_mel_frames=416)
    latent_change = (latents[1] - latents[0]).abs().sum(dim=(0, 2))
    burst_centre_step = (onset + BURST_S / 2) * 25  # 40 ms per latent step
    assert abs(int(latent_change.argmax()) - burst_centre_step) <= 1.5

    decoded = codec.decode(latents, num_samples=length)
    window = 320
    envelope = torch.nn.functional.avg_pool1d((decoded[1] - decoded[0]).abs()[None, None], window, window // 4)[0, 0]
    peak_s = (int(envelope.argmax()) * window // 4 + window // 2) / RATE
    assert abs(peak_s - (onset + BURST_S / 2)) <= 0.1
