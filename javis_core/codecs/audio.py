"""Audio latent space of JavisDiT++: AudioLDM2 mel front end, VAE and HiFi-GAN vocoder (docs/official.md §3.2).

Waveform (16 kHz mono) -> log-mel (B, 1, T_mel, 64) -> ``AutoencoderKL`` latents (B, 8, T_mel/4, 16) x 0.41109...
and back through ``vae.decode`` and the ``SpeechT5HifiGan`` vocoder.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
from transformers.audio_utils import hertz_to_mel, mel_filter_bank, mel_to_hertz

SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 160
NUM_MELS = 64
VAE_DOWNSAMPLE = 4
AUDIOLDM2_SCALING_FACTOR = 0.4110932946205139


def mel_frames_for(num_frames: int, fps: float = 16, multiple: int = 32) -> int:
    """Inference mel length for a clip of ``num_frames`` video frames (docs/official.md §3.2 "Inference audio latent length").

    ``int(seconds / 0.01)`` rounded up to a multiple of ``multiple`` (32 = VAE 4 x DiT patch 2 x 4, the
    official "TODO: fix audio pulse" padding). 33 -> 224, 65 -> 416, 81 -> 512, 102 -> 640.
    """
    seconds = num_frames / fps
    frames = int(seconds / 0.01)  # same float arithmetic as the official prepare_latents
    return int(math.ceil(frames / multiple) * multiple)


def mel_frames_for_samples(num_samples: int, sample_rate: int = SAMPLE_RATE, multiple: int = 8) -> int:
    """Training mel length for a waveform of ``num_samples`` (docs/official.md §3.2 step 5).

    ``int(duration * 16000 / 160)`` rounded up to a multiple of ``multiple`` (8 in the training configs).
    """
    frames = int(num_samples / sample_rate * SAMPLE_RATE / HOP_LENGTH)
    return int(math.ceil(frames / multiple) * multiple)


def audio_latent_shape(num_frames: int, fps: float = 16) -> tuple[int, int, int]:
    """Audio latent shape (C, T, F) = (8, T_mel / 4, 16) used at inference for ``num_frames`` video frames."""
    return (8, mel_frames_for(num_frames, fps) // VAE_DOWNSAMPLE, NUM_MELS // VAE_DOWNSAMPLE)


def num_audio_samples(num_frames: int, fps: float = 16, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of waveform samples kept after decoding: ``int(num_frames / fps * sample_rate)`` (65 f -> 65,000)."""
    return int(num_frames / fps * sample_rate)


def slaney_mel_filters() -> np.ndarray:
    """AudioLDM2's (513, 64) float32 filterbank, bit-exact with ``librosa.filters.mel(norm="slaney")``.

    librosa casts the float64 triangles to float32 before the Slaney area normalisation; transformers' ``dtype=``
    argument of ``mel_filter_bank`` does the same but only exists in recent releases, so it is done here by hand
    (``norm=None`` then the normalisation) to work on every transformers version requirements.txt allows.
    """
    filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=NUM_MELS,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm=None,
        mel_scale="slaney",
    ).astype(np.float32)
    edges = np.linspace(hertz_to_mel(0.0, mel_scale="slaney"), hertz_to_mel(8000.0, mel_scale="slaney"), NUM_MELS + 2)
    edges_hz = mel_to_hertz(edges, mel_scale="slaney")
    filters *= np.expand_dims(2.0 / (edges_hz[2:] - edges_hz[:-2]), 0)
    return filters


class MelFrontEnd(torch.nn.Module):
    """AudioLDM2 waveform -> log-mel transform (docs/official.md §3.2 steps 2-5), pure torch.

    Input: float waveform (B, N) or (N,) at 16 kHz. Output: (B, 1, T_mel, 64) float32 log-mel, time first, with
    ``T_mel = 1 + N // 160`` unless ``num_frames`` is given (then zero-padded or cut; zeros are in the log domain).
    Always computed in float32 on the waveform's device, whatever dtype the module was cast to.
    """

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize
        # plain float32 tensors, not buffers, so that casting a parent module to bf16 cannot quantise them
        self.mel_basis = torch.from_numpy(np.ascontiguousarray(slaney_mel_filters().T))  # (64, 513)
        self.window = torch.hann_window(N_FFT, periodic=True)

    @staticmethod
    def normalize_waveform(waveform: torch.Tensor) -> torch.Tensor:
        """Subtract the mean, divide by max|x| + 1e-8, times 0.5, clip to [-1, 1] (per batch item)."""
        waveform = waveform - waveform.mean(dim=-1, keepdim=True)
        waveform = waveform / (waveform.abs().amax(dim=-1, keepdim=True) + 1e-8)
        return (waveform * 0.5).clamp(-1.0, 1.0)

    def forward(self, waveform: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"waveform must have shape (B, N) or (N,), got {tuple(waveform.shape)}")
        x = waveform.float()
        if self.normalize:
            x = self.normalize_waveform(x)
        pad = N_FFT // 2
        if x.shape[-1] <= pad:
            raise ValueError(f"waveform must have more than {pad} samples for reflect padding, got {x.shape[-1]}")
        x = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=self.window.to(x.device),
            center=False,
            onesided=True,
            return_complex=True,
        ).abs()  # (B, 513, T)
        mel = torch.matmul(self.mel_basis.to(x.device), spec)  # (B, 64, T)
        log_mel = torch.log(mel.clamp(min=1e-5)).transpose(1, 2)  # (B, T, 64)
        if num_frames is not None:
            log_mel = pad_or_cut_frames(log_mel, num_frames)
        return log_mel.unsqueeze(1)


def pad_or_cut_frames(log_mel: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Zero-pad (log domain, docs/official.md §3.2 step 5) or cut a (..., T, 64) log-mel along T to ``num_frames``."""
    t = log_mel.shape[-2]
    if t >= num_frames:
        return log_mel[..., :num_frames, :]
    return torch.nn.functional.pad(log_mel, (0, 0, 0, num_frames - t))


def _placement(module: torch.nn.Module) -> torch.Tensor:
    """A tensor of the module giving its device and dtype (a Griffin-Lim vocoder has buffers but no parameters)."""
    return next(itertools.chain(module.parameters(), module.buffers()))


class AudioCodec(torch.nn.Module):
    """AudioLDM2 ``vae`` + ``vocoder`` pair with the JavisDiT++ latent conventions (docs/official.md §3.2)."""

    def __init__(self, vae: AutoencoderKL, vocoder: SpeechT5HifiGan) -> None:
        super().__init__()
        self.vae = vae
        self.vocoder = vocoder
        self.mel = MelFrontEnd()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool = True,
    ) -> "AudioCodec":
        """Load ``vae/`` (diffusers) and ``vocoder/`` (transformers) from a directory laid out like cvssp/audioldm2."""
        path = Path(path)
        if path.is_dir():
            for sub in ("vae", "vocoder"):
                if not (path / sub).is_dir():
                    raise FileNotFoundError(f"{path} has no '{sub}/' subfolder (expected a cvssp/audioldm2 layout)")
        vae = AutoencoderKL.from_pretrained(
            str(path), subfolder="vae", torch_dtype=torch_dtype, local_files_only=local_files_only
        )
        vocoder = SpeechT5HifiGan.from_pretrained(
            str(path), subfolder="vocoder", dtype=torch_dtype, local_files_only=local_files_only
        )
        codec = cls(vae, vocoder).eval()
        if device is not None:
            codec.to(device)
        return codec

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        if "downsample" in self.vae.config:  # the demo's LinearMelVAE says it directly
            return int(self.vae.config.downsample)
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def num_mel_bins(self) -> int:
        return int(self.vocoder.config.model_in_dim)

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sampling_rate)

    def enable_slicing(self) -> None:
        self.vae.enable_slicing()

    def disable_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_tiling(self) -> None:
        self.vae.enable_tiling()

    def disable_tiling(self) -> None:
        self.vae.disable_tiling()

    def waveform_to_mel(self, waveform: torch.Tensor, num_mel_frames: int | None = None) -> torch.Tensor:
        """(B, N) waveform -> (B, 1, T_mel, 64) log-mel; default length is the training one (multiple of 8)."""
        if num_mel_frames is None:
            num_mel_frames = mel_frames_for_samples(waveform.shape[-1])
        return self.mel(waveform, num_frames=num_mel_frames)

    @torch.no_grad()
    def encode_mel(
        self, mel: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, 1, T_mel, 64) log-mel -> scaled latents (B, 8, T_mel/4, 16) in the VAE dtype."""
        if mel.dim() != 4 or mel.shape[1] != 1 or mel.shape[-1] != self.num_mel_bins:
            raise ValueError(f"mel must have shape (B, 1, T_mel, {self.num_mel_bins}), got {tuple(mel.shape)}")
        if mel.shape[2] % self.downsample:
            raise ValueError(f"mel T_mel={mel.shape[2]} must be a multiple of the VAE downsampling {self.downsample}")
        p = _placement(self.vae)
        dist = self.vae.encode(mel.to(p.device, p.dtype)).latent_dist
        # training samples the posterior (docs/official.md §3.2 step 6 / §11 item 14), unlike the video VAE
        z = dist.sample(generator=generator) if sample_posterior else dist.mode()
        return z * self.scaling_factor

    def encode(
        self,
        waveform: torch.Tensor,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
        num_mel_frames: int | None = None,
    ) -> torch.Tensor:
        """(B, N) 16 kHz waveform -> scaled latents (B, 8, T_mel/4, 16).

        ``num_mel_frames`` defaults to the training length (``mel_frames_for_samples``); pass
        ``mel_frames_for(num_frames)`` for the inference length.
        """
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        if waveform.dim() != 2:
            raise ValueError(f"waveform must have shape (B, N), got {tuple(waveform.shape)}")
        mel = self.waveform_to_mel(waveform, num_mel_frames)
        return self.encode_mel(mel, sample_posterior=sample_posterior, generator=generator)

    @torch.no_grad()
    def decode_to_mel(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 8, T, 16) -> log-mel (B, 1, 4T, 64) in the VAE dtype."""
        expected_width = self.num_mel_bins // self.downsample
        if latents.dim() != 4:
            raise ValueError(f"latents must have shape (B, C, T, F), got {tuple(latents.shape)}")
        if latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents channels (dim 1) must be latent_channels={self.latent_channels}, got {latents.shape[1]}"
            )
        if latents.shape[3] != expected_width:
            raise ValueError(f"latents mel width (dim 3) must be {expected_width}, got {latents.shape[3]}")
        p = _placement(self.vae)
        return self.vae.decode(latents.to(p.device, p.dtype) / self.scaling_factor).sample

    @torch.no_grad()
    def mel_to_waveform(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, 64) or (B, T, 64) log-mel -> (B, ~T*160) float32 CPU waveform via the vocoder."""
        if mel.dim() == 4:
            mel = mel.squeeze(1)
        p = _placement(self.vocoder)
        return self.vocoder(mel.to(p.device, p.dtype)).cpu().float()

    def decode(self, latents: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        """Scaled latents (B, 8, T, 16) -> waveform (B, N) float32 on CPU, truncated to ``num_samples`` if given."""
        wav = self.mel_to_waveform(self.decode_to_mel(latents))
        if num_samples is not None:
            if num_samples > wav.shape[-1]:
                raise ValueError(f"num_samples={num_samples} exceeds the decoded length {wav.shape[-1]}")
            wav = wav[..., :num_samples]
        return wav


def tiny_audio_codec_components(seed: int = 0) -> tuple[AutoencoderKL, SpeechT5HifiGan]:
    """Small random ``AutoencoderKL`` and ``SpeechT5HifiGan`` with the AudioLDM2 interfaces (for tests)."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=AUDIOLDM2_SCALING_FACTOR,
    )
    config = SpeechT5HifiGanConfig(
        model_in_dim=NUM_MELS,
        sampling_rate=SAMPLE_RATE,
        upsample_initial_channel=32,
        upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    )
    vocoder = SpeechT5HifiGan(config)
    with torch.no_grad():  # the default init shrinks the signal to ~1e-9 through the stack: make it audible
        for module in vocoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                torch.nn.init.kaiming_uniform_(module.weight, a=0.1)
        vocoder.conv_post.weight.mul_(0.05)  # quiet enough not to saturate the final tanh
    return vae.eval(), vocoder.eval()


def save_tiny_audioldm2(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write tiny random ``vae/`` and ``vocoder/`` subfolders so ``AudioCodec.from_pretrained(directory)`` works."""
    directory = Path(directory)
    vae, vocoder = tiny_audio_codec_components(seed)
    vae.save_pretrained(directory / "vae")
    vocoder.save_pretrained(directory / "vocoder")
    return directory
