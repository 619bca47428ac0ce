"""Tests for javis_core.codecs.audio (docs/official.md §3.2 / §3.3) using tiny random AudioLDM2-shaped components."""

import numpy as np
import pytest
import torch

from javis_core.codecs.audio import (
    AUDIOLDM2_SCALING_FACTOR,
    AudioCodec,
    MelFrontEnd,
    audio_latent_shape,
    mel_frames_for,
    mel_frames_for_samples,
    num_audio_samples,
    save_tiny_audioldm2,
    slaney_mel_filters,
    tiny_audio_codec_components,
)

SR = 16000


def _slaney_mel_bank(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0):
    """Independent numpy version of librosa's default (Slaney scale, Slaney norm) filterbank, (513, 64)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    weights = np.zeros((n_mels, fft_freqs.size))
    for i in range(n_mels):
        lower = (fft_freqs - hz[i]) / (hz[i + 1] - hz[i])
        upper = (hz[i + 2] - fft_freqs) / (hz[i + 2] - hz[i + 1])
        weights[i] = np.maximum(0, np.minimum(lower, upper)) * 2.0 / (hz[i + 2] - hz[i])
    return weights.T


def _numpy_log_mel(wav: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """float64 reference of docs/official.md §3.2 steps 2-4 for one waveform -> (T, 64)."""
    x = wav.astype(np.float64)
    x = x - x.mean()
    x = np.clip(x / (np.abs(x).max() + 1e-8) * 0.5, -1, 1)
    x = np.pad(x, (512, 512), mode="reflect")
    n_frames = 1 + (x.size - 1024) // 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    frames = np.stack([x[i * 160 : i * 160 + 1024] for i in range(n_frames)]) * window
    mag = np.abs(np.fft.rfft(frames, axis=-1))  # (T, 513)
    return np.log(np.maximum(mag @ fb, 1e-5))


@pytest.fixture(scope="module")
def codec() -> AudioCodec:
    return AudioCodec(*tiny_audio_codec_components(seed=0)).eval()


def test_length_helpers_match_spec_table():
    assert [mel_frames_for(n) for n in (33, 65, 81, 102)] == [224, 416, 512, 640]
    assert audio_latent_shape(33) == (8, 56, 16)
    assert audio_latent_shape(65) == (8, 104, 16)
    assert audio_latent_shape(81) == (8, 128, 16)
    assert [num_audio_samples(n) for n in (33, 65, 81, 102)] == [33000, 65000, 81000, 102000]
    # training lengths (multiple of 8): 33 f -> 26 DiT audio steps, 49 -> 39, 65 -> 51, 81 -> 64 (docs/official.md §3.3)
    assert [mel_frames_for_samples(num_audio_samples(n)) // 8 for n in (33, 49, 65, 81)] == [26, 39, 51, 64]


def test_filterbank_is_librosa_slaney():
    fe = MelFrontEnd()
    np.testing.assert_allclose(fe.mel_basis.numpy().T, _slaney_mel_bank(), rtol=1e-5, atol=1e-8)


def test_filterbank_bit_exact_without_the_dtype_argument():
    """The filterbank avoids mel_filter_bank(dtype=...) (absent from older transformers) yet gives the same bits."""
    import inspect

    from transformers.audio_utils import mel_filter_bank

    if "dtype" not in inspect.signature(mel_filter_bank).parameters:
        pytest.skip("this transformers has no dtype argument to compare against")
    expected = mel_filter_bank(513, 64, 0.0, 8000.0, SR, norm="slaney", mel_scale="slaney", dtype=np.float32)
    assert slaney_mel_filters().dtype == np.float32
    np.testing.assert_array_equal(slaney_mel_filters(), expected)
    np.testing.assert_array_equal(MelFrontEnd().mel_basis.numpy().T, expected)


def test_mel_front_end_matches_numpy_reference():
    g = np.random.default_rng(0)
    t = np.arange(12000) / SR
    wav = 0.3 * g.standard_normal(t.size) + np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.7
    wav2 = 5.0 * g.standard_normal(t.size)
    ref = np.stack([_numpy_log_mel(w, MelFrontEnd().mel_basis.numpy().T.astype(np.float64)) for w in (wav, wav2)])
    out = MelFrontEnd()(torch.tensor(np.stack([wav, wav2]), dtype=torch.float32))
    assert out.shape == (2, 1, 1 + 12000 // 160, 64)
    np.testing.assert_allclose(out[:, 0].numpy(), ref, atol=1e-4, rtol=0)


def test_mel_shape_and_padding_for_65_frames():
    fe = MelFrontEnd()
    wav = torch.randn(2, num_audio_samples(65))
    natural = fe(wav)
    assert natural.shape == (2, 1, 407, 64)
    padded = fe(wav, num_frames=mel_frames_for(65))
    assert padded.shape == (2, 1, 416, 64)
    torch.testing.assert_close(padded[:, :, :407], natural)
    assert torch.all(padded[:, :, 407:] == 0)  # zero padding in the log domain, not silence
    assert fe(wav, num_frames=400).shape == (2, 1, 400, 64)
    # gain and DC offset are normalised away
    torch.testing.assert_close(fe(3.0 * wav[:1] + 0.25), natural[:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("offset", [0, 80, 37])
def test_tone_burst_onsets_within_one_frame(offset):
    n = 3 * SR
    t = np.arange(n) / SR
    starts = [offset + 4000 + k * 8000 for k in range(5)]  # 50 ms bursts every 500 ms
    wav = np.zeros(n)
    for s in starts:
        wav[s : s + 800] = np.sin(2 * np.pi * 1000 * t[: 800])
    wav += 1e-3 * np.random.default_rng(1).standard_normal(n)
    mel = MelFrontEnd()(torch.tensor(wav, dtype=torch.float32)[None])[0, 0].double().exp()  # linear mel
    energy = mel[:, mel.sum(0).argmax()].numpy()  # magnitude of the 1 kHz mel band (broadband clicks ignored)
    frame_times = np.arange(energy.size) * 160  # centred frames: frame i is centred on sample 160 * i
    for s in starts:
        seg = slice(s // 160 - 15, s // 160 + 15)
        e = energy[seg]
        onset = np.argmax(e > 0.5 * e.max())  # first frame above half of the burst's peak magnitude
        assert abs(frame_times[seg][onset] - s) <= 160, (s, frame_times[seg][onset])


def test_codec_shapes_65_frames(codec):
    wav = torch.randn(2, num_audio_samples(65))
    latents = codec.encode(wav, num_mel_frames=mel_frames_for(65))
    assert latents.shape == (2, *audio_latent_shape(65)) == (2, 8, 104, 16)
    assert codec.scaling_factor == AUDIOLDM2_SCALING_FACTOR
    assert codec.decode_to_mel(latents).shape == (2, 1, 416, 64)
    out = codec.decode(latents, num_samples=num_audio_samples(65))
    assert out.shape == (2, 65000) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert codec.decode(latents[:1]).shape[-1] >= 416 * 160
    # default encode length is the training one (multiple of 8 mel frames)
    assert codec.encode(wav[:1], sample_posterior=False).shape == (1, 8, 102, 16)


def test_codec_posterior_sampling(codec):
    wav = torch.randn(1, 8000)
    a = codec.encode(wav, sample_posterior=False)
    torch.testing.assert_close(codec.encode(wav, sample_posterior=False), a, rtol=0, atol=0)
    s1 = codec.encode(wav, generator=torch.Generator().manual_seed(3))
    s2 = codec.encode(wav, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.equal(s1, a)
    mel = codec.waveform_to_mel(wav)
    mean = codec.vae.encode(mel).latent_dist.mean * AUDIOLDM2_SCALING_FACTOR
    torch.testing.assert_close(a, mean.detach())


def test_save_and_from_pretrained_round_trip(tmp_path, codec):
    save_tiny_audioldm2(tmp_path / "audioldm2", seed=0)
    loaded = AudioCodec.from_pretrained(tmp_path / "audioldm2", torch_dtype=torch.float32, device="cpu")
    wav = torch.randn(1, 8000)
    torch.testing.assert_close(
        loaded.encode(wav, sample_posterior=False), codec.encode(wav, sample_posterior=False), rtol=0, atol=0
    )
    z = torch.randn(1, 8, 16, 16)
    torch.testing.assert_close(loaded.decode(z, 2000), codec.decode(z, 2000), rtol=0, atol=0)
    assert loaded.vae.config.latent_channels == 8 and loaded.vocoder.config.model_in_dim == 64


def test_from_pretrained_missing_subfolder(tmp_path):
    (tmp_path / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match="vocoder"):
        AudioCodec.from_pretrained(tmp_path)


def test_clear_errors(codec):
    with pytest.raises(ValueError, match="channels"):
        codec.decode(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="mel width"):
        codec.decode(torch.randn(1, 8, 16, 8))
    with pytest.raises(ValueError, match="mel"):
        codec.encode_mel(torch.randn(1, 1, 16, 80))
    with pytest.raises(ValueError, match="multiple"):
        codec.encode_mel(torch.randn(1, 1, 18, 64))
    with pytest.raises(ValueError, match="num_samples"):
        codec.decode(torch.randn(1, 8, 4, 16), num_samples=10**6)
