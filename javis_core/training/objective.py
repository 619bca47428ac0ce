"""Rectified-flow training objective of JavisDiT++ (docs/official.md §8.1).

t = 1000 * shift(u), u = sigmoid(n), n ~ N(0, 1) (logit-normal), shift = the official resolution/length shift with
scale 5 from the bucket's H, W and frame count; x_t = (1 - t/1000) x0 + (t/1000) noise; our model predicts the
velocity noise - x0 (the official target x0 - noise against its negated output: the same squared error).
Loss = per-sample mean squared error per modality, video + audio with equal weights.
"""

from __future__ import annotations

import torch

from ..pipelines.schedule import official_shift, shift_sigmas

TRAIN_SHIFT_SCALE = 5.0


def sample_timesteps(
    batch_size: int, shift: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) timesteps on the 0..1000 scale (1000 = noise), logit-normal then shifted."""
    u = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device))
    return shift_sigmas(u, shift) * 1000


def training_shift(height: int, width: int, num_frames: int, scale: float = TRAIN_SHIFT_SCALE) -> float:
    """Official training shift (bf16 arithmetic): e.g. 240x432, 65 frames -> about 12.19."""
    return official_shift(height, width, num_frames, scale=scale)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    sigma = (timesteps.float() / 1000).view(-1, *([1] * (x0.dim() - 1)))
    return (1 - sigma) * x0 + sigma * noise


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) mean of squared errors over every latent element of each sample."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


def cfg_dropout(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    null_embeds: torch.Tensor,
    null_mask: torch.Tensor,
    probability: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each sample's text by the negative-prompt encoding with ``probability`` (both modalities at once).

    Returns new (embeds, mask, dropped) tensors; the inputs are left untouched.
    """
    dropped = torch.rand(embeds.shape[0], generator=generator, device=embeds.device) < probability
    if probability <= 0 or not dropped.any():
        return embeds, mask, dropped
    keep = ~dropped
    embeds = torch.where(keep[:, None, None], embeds, null_embeds.to(embeds.dtype).expand_as(embeds))
    mask = torch.where(keep[:, None], mask, null_mask.to(mask.dtype).expand_as(mask))
    return embeds, mask, dropped


def flow_matching_losses(
    model: torch.nn.Module,
    video: torch.Tensor | None,
    audio: torch.Tensor | None,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    timesteps: torch.Tensor,
    video_noise: torch.Tensor | None,
    audio_noise: torch.Tensor | None,
    num_frames: int,
    video_timesteps: torch.Tensor | None = None,
    audio_timesteps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample losses {"video": (B,), "audio": (B,)} for the modalities given (None ones are left out).

    ``video_timesteps`` / ``audio_timesteps`` noise that modality to other levels than ``timesteps`` (the model is
    still told ``timesteps``); by default both modalities share them, as in the official training."""
    video_level = timesteps if video_timesteps is None else video_timesteps
    audio_level = timesteps if audio_timesteps is None else audio_timesteps
    noisy_video = add_noise(video, video_noise, video_level) if video is not None else None
    noisy_audio = add_noise(audio, audio_noise, audio_level) if audio is not None else None
    out = model(
        hidden_states=noisy_video,
        timestep=timesteps,
        encoder_hidden_states=embeds,
        audio_hidden_states=noisy_audio,
        encoder_attention_mask=mask,
        num_frames=num_frames,
    )
    losses = {}
    if video is not None:
        losses["video"] = per_sample_mse(out.sample, video_noise - video)
    if audio is not None:
        losses["audio"] = per_sample_mse(out.audio_sample, audio_noise - audio)
    return losses


def clearer_picture(
    timesteps: torch.Tensor, probability: float, video_noise_scale: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(video timesteps, chosen): with ``probability`` a sample's video is noised to ``video_noise_scale`` times its
    audio's level, so that the audio learns to read the timing of a picture that is further along than itself."""
    chosen = torch.rand(timesteps.shape[0], generator=generator, device=timesteps.device) < probability
    return torch.where(chosen, timesteps * video_noise_scale, timesteps), chosen


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """Equal-weight sum of the modality losses per sample, averaged over the batch."""
    return sum(losses.values()).mean()
