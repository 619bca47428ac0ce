"""Small codecs of the offline demo model, with the interfaces of the real ones so the pipeline needs no change.

* :class:`LinearVideoVAE` stands in for ``AutoencoderKLWan``: frames are average-pooled by ``pixel_pool`` and
  each block of 4 frames x 16 x 16 (pooled) pixels x RGB is projected onto its first ``z_dim`` principal
  components. PCA is the best linear autoencoder for squared error and is fitted in seconds in closed form, which
  is what a CPU-trained demo can afford; the demo world (flat coloured shapes on a dark ground) is close to that
  linear subspace. Pooling 2x (a 32-pixel stride) gives the transformer 4x fewer video tokens for a small loss of
  edge sharpness (decoding upsamples linearly). Like Wan's causal VAE, 4k+1 frames map to k+1 latent frames (the
  first frame is repeated to fill the first block).
* :class:`LinearMelVAE` stands in for AudioLDM2's ``AutoencoderKL``: PCA of 4 x 4 (time x mel) log-mel patches
  to 8 channels (whitened, or with one shared scale), so latents keep the (8, T_mel/4, 16) shape of the real audio
  latents.
* :class:`GriffinLimVocoder` stands in for ``SpeechT5HifiGan``: log-mel -> linear magnitude by the filterbank's
  pseudo-inverse, phase by fast Griffin-Lim (Perraudin et al. 2013). No training; deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank

from .audio_codec import HOP_LENGTH, N_FFT, NUM_MELS, SAMPLE_RATE
from .utils import saved_class_name

_DETERMINISTIC_LOGVAR = -30.0  # the posterior is a point: diffusers clamps logvar at -30 (std 3e-7)


def _point_posterior(mean: torch.Tensor) -> DiagonalGaussianDistribution:
    return DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, _DETERMINISTIC_LOGVAR)], dim=1))


def _principal_components(batches: Iterable[torch.Tensor], count: int) -> tuple[torch.Tensor, ...]:
    """(mean (D,), components (count, D) orthonormal rows, variances (count,)) of the rows of (N_i, D) batches.

    The covariance is accumulated batch by batch in float64, so only one batch is in memory at a time."""
    total = outer = None
    rows = 0
    for batch in batches:
        batch = batch.double()
        total = batch.sum(dim=0) if total is None else total + batch.sum(dim=0)
        outer = batch.T @ batch if outer is None else outer + batch.T @ batch
        rows += len(batch)
    mean = total / rows
    covariance = (outer - rows * torch.outer(mean, mean)) / max(rows - 1, 1)
    variances, vectors = torch.linalg.eigh(covariance)
    order = torch.argsort(variances, descending=True)[:count]
    return mean.float(), vectors[:, order].T.float().contiguous(), variances[order].clamp(min=1e-10)


class _NoTiling:
    """Block codecs hold no large activations: tiling and slicing (AutoencoderKL's memory savers) do nothing."""

    def enable_tiling(self, *args, **kwargs) -> None: ...
    def disable_tiling(self) -> None: ...
    def enable_slicing(self) -> None: ...
    def disable_slicing(self) -> None: ...


class LinearVideoVAE(_NoTiling, ModelMixin, ConfigMixin):
    """PCA video codec with ``AutoencoderKLWan``'s API (``encode(x).latent_dist``, ``decode(z).sample``, config
    ``z_dim``, ``latents_mean``/``latents_std``, ``scale_factor_temporal``/``scale_factor_spatial``)."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 16,
        in_channels: int = 3,
        scale_factor_temporal: int = 4,
        scale_factor_spatial: int = 16,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        pixel_pool: int = 1,
    ):
        super().__init__()
        if scale_factor_spatial % pixel_pool:
            raise ValueError(f"scale_factor_spatial ({scale_factor_spatial}) must be a multiple of pixel_pool "
                             f"({pixel_pool})")  # fmt: skip
        block = scale_factor_temporal * (scale_factor_spatial // pixel_pool) ** 2 * in_channels
        if z_dim > block:
            raise ValueError(f"z_dim must be at most the block size {block}, got {z_dim}")
        self.components = nn.Parameter(torch.zeros(z_dim, block), requires_grad=False)
        self.pixel_mean = nn.Parameter(torch.zeros(block), requires_grad=False)
        if latents_mean is None:
            self.register_to_config(latents_mean=[0.0] * z_dim)
        if latents_std is None:
            self.register_to_config(latents_std=[1.0] * z_dim)

    def _to_blocks(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        b, c, t, h, w = frames.shape
        st, stride, pool = self.config.scale_factor_temporal, self.config.scale_factor_spatial, self.config.pixel_pool
        if (t - 1) % st or h % stride or w % stride:
            raise ValueError(f"frames must be (B, {c}, {st}k+1, {stride}m, {stride}n), got {tuple(frames.shape)}")
        if pool > 1:
            frames = F.avg_pool3d(frames, (1, pool, pool))
        ss, h, w = stride // pool, h // pool, w // pool
        frames = torch.cat([frames[:, :, :1].expand(-1, -1, st - 1, -1, -1), frames], dim=2)  # causal first block
        n, hh, ww = frames.shape[2] // st, h // ss, w // ss
        blocks = frames.reshape(b, c, n, st, hh, ss, ww, ss).permute(0, 2, 4, 6, 3, 5, 7, 1)
        return blocks.reshape(b, n, hh, ww, -1), (n, hh, ww)

    def _from_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        b, n, hh, ww, _ = blocks.shape
        st, c, pool = self.config.scale_factor_temporal, self.config.in_channels, self.config.pixel_pool
        ss = self.config.scale_factor_spatial // pool
        frames = blocks.reshape(b, n, hh, ww, st, ss, ss, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        frames = frames.reshape(b, c, n * st, hh * ss, ww * ss)[:, :, st - 1 :]
        if pool > 1:
            frames = F.interpolate(frames, scale_factor=(1, pool, pool), mode="trilinear", align_corners=False)
        return frames

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """(B, 3, 4k+1, H, W) in [-1, 1] -> PCA coefficients (B, z_dim, k+1, H/s, W/s) as a point posterior."""
        blocks, _ = self._to_blocks(x.to(self.components.dtype))
        z = ((blocks - self.pixel_mean) @ self.components.T).permute(0, 4, 1, 2, 3)
        posterior = _point_posterior(z.contiguous())
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """(B, z_dim, k+1, h, w) -> frames (B, 3, 4k+1, s*h, s*w) clamped to [-1, 1]."""
        blocks = z.to(self.components.dtype).permute(0, 2, 3, 4, 1) @ self.components + self.pixel_mean
        frames = self._from_blocks(blocks).clamp(-1.0, 1.0)
        return DecoderOutput(sample=frames) if return_dict else (frames,)

    @classmethod
    def fit(cls, clips: Iterable[np.ndarray], z_dim: int = 16, scale_factor_spatial: int = 16, pixel_pool: int = 1,
            blocks_per_clip: int = 500, seed: int = 0) -> LinearVideoVAE:  # fmt: skip
        """Fit on uint8 clips (T = 4k+1, H, W multiples of the stride, 3): PCA of ``blocks_per_clip`` random blocks
        of each clip (memory stays small: the covariance is accumulated clip by clip)."""
        model = cls(z_dim=z_dim, scale_factor_spatial=scale_factor_spatial, pixel_pool=pixel_pool)
        generator = torch.Generator().manual_seed(seed)
        size = model.components.shape[1]

        def sampled_blocks():
            for clip in clips:
                frames = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
                blocks = model._to_blocks(frames)[0].reshape(-1, size)
                yield blocks[torch.randperm(len(blocks), generator=generator)[:blocks_per_clip]]

        mean, components, variances = _principal_components(sampled_blocks(), z_dim)
        model.pixel_mean.data.copy_(mean)
        model.components.data.copy_(components)
        model.register_to_config(latents_mean=[0.0] * z_dim, latents_std=variances.sqrt().tolist())
        return model.eval()


class LinearMelVAE(_NoTiling, ModelMixin, ConfigMixin):
    """PCA of (time x mel) log-mel patches with ``AutoencoderKL``'s API. Latents are divided by one scale per
    channel (``component_std``): whitened, or one shared scale (unit mean variance) so that the channels keep their
    share of the signal and a loss on them weighs the loud envelope above the noise-floor texture."""

    @register_to_config
    def __init__(self, latent_channels: int = 8, downsample: int = 4, num_mel_bins: int = NUM_MELS,
                 scaling_factor: float = 1.0):  # fmt: skip
        super().__init__()
        patch = downsample * downsample
        self.components = nn.Parameter(torch.zeros(latent_channels, patch), requires_grad=False)
        self.component_std = nn.Parameter(torch.ones(latent_channels), requires_grad=False)
        self.patch_mean = nn.Parameter(torch.zeros(patch), requires_grad=False)

    def _patches(self, mel: torch.Tensor) -> torch.Tensor:
        b, _, t, f = mel.shape
        d = self.config.downsample
        return mel.reshape(b, t // d, d, f // d, d).permute(0, 1, 3, 2, 4).reshape(b, t // d, f // d, d * d)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """(B, 1, T, 64) log-mel -> (B, 8, T/4, 16) scaled PCA coefficients as a point posterior."""
        z = (self._patches(x.to(self.components.dtype)) - self.patch_mean) @ self.components.T / self.component_std
        posterior = _point_posterior(z.permute(0, 3, 1, 2).contiguous())
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """(B, 8, T', F') -> log-mel (B, 1, 4T', 4F')."""
        d = self.config.downsample
        coefficients = z.to(self.components.dtype).permute(0, 2, 3, 1) * self.component_std
        patches = coefficients @ self.components + self.patch_mean  # (B, T', F', d*d)
        b, t, f, _ = patches.shape
        mel = patches.reshape(b, t, f, d, d).permute(0, 1, 3, 2, 4).reshape(b, 1, t * d, f * d)
        return DecoderOutput(sample=mel) if return_dict else (mel,)

    @classmethod
    def fit(cls, mels: Iterable[torch.Tensor], latent_channels: int = 8, whiten: bool = True,
            scaling_factor: float = 1.0) -> LinearMelVAE:  # fmt: skip
        """Fit on (B, 1, T, 64) log-mels (T a multiple of 4); ``whiten=False``: one shared scale for all channels."""
        model = cls(latent_channels=latent_channels, scaling_factor=scaling_factor)
        patches = (model._patches(mel.float()).reshape(-1, model.patch_mean.numel()) for mel in mels)
        mean, components, variances = _principal_components(patches, latent_channels)
        model.patch_mean.data.copy_(mean)
        model.components.data.copy_(components)
        scales = variances.sqrt() if whiten else variances.mean().sqrt().expand_as(variances)
        model.component_std.data.copy_(scales.float())
        return model.eval()


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """Log-mel (B, T, 64) -> waveform (B, T * hop) with ``SpeechT5HifiGan``'s call and config names."""

    @register_to_config
    def __init__(self, model_in_dim: int = NUM_MELS, sampling_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                 hop_length: int = HOP_LENGTH, num_iterations: int = 32, momentum: float = 0.99):  # fmt: skip
        super().__init__()
        basis = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=model_in_dim, min_frequency=0.0,
                                max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm="slaney",
                                mel_scale="slaney", dtype=np.float64)  # fmt: skip  (513, 64), as MelFrontEnd's
        self.register_buffer("inverse_basis", torch.from_numpy(np.linalg.pinv(basis.T)).float())  # (513, 64)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, self.config.n_fft, self.config.hop_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # fmt: skip

    def _istft(self, spectrum: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spectrum, self.config.n_fft, self.config.hop_length, window=self.window, center=True,
                           length=length)  # fmt: skip

    @torch.no_grad()
    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        mel = spectrogram.float().exp().transpose(1, 2)  # (B, 64, T)
        magnitude = (self.inverse_basis @ mel).clamp(min=0.0)
        length = mel.shape[-1] * self.config.hop_length
        generator = torch.Generator(device="cpu").manual_seed(0)
        phase = torch.rand(magnitude.shape, generator=generator).to(magnitude.device) * 2 * torch.pi
        angles = torch.polar(torch.ones_like(magnitude), phase)
        previous = torch.zeros_like(angles)
        alpha = self.config.momentum / (1 + self.config.momentum)
        for _ in range(self.config.num_iterations):
            rebuilt = self._stft(self._istft(magnitude * angles, length))[..., : magnitude.shape[-1]]
            angles = rebuilt - alpha * previous
            angles = angles / (angles.abs() + 1e-8)
            previous = rebuilt
        return self._istft(magnitude * angles, length).clamp(-1.0, 1.0)


def saved_codec_class(directory, default: type) -> type:
    """The demo codec class that a saved ``config.json`` names, else ``default`` (the real model's class)."""
    demo_classes = {cls.__name__: cls for cls in (LinearVideoVAE, LinearMelVAE, GriffinLimVocoder)}
    return demo_classes.get(saved_class_name(directory), default)
