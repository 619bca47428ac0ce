"""Temporal-aligned 3-D RoPE (TA-RoPE) of JavisDiT++.

Video tokens keep Wan's (t, h, w) ids. Audio tokens get the time id of the latent video frame they fall in,
computed exactly like the official code (docs/official.md §2.2): ``ceil(torch.linspace(0, Tv - 1, Ta))`` in float64,
which differs from the paper's ``round(tau * Tv / Ta)`` at a few steps. The rotation tables come out in the
``(cos, sin)`` layout that diffusers' ``WanAttnProcessor`` consumes: shape (1, N, 1, head_dim) with every angle
repeated for the two members of a rotated pair.
"""

from __future__ import annotations

import torch
from torch import nn

AUDIO_PE_TYPES = ("vanilla", "interpolate", "interleave", "interleave_offset")


def video_position_ids(num_frames: int, height: int, width: int) -> torch.Tensor:
    """Ids (N, 3) float64 of the patched video grid, flattened in (t, h, w) order with w fastest."""
    grid = torch.meshgrid(
        torch.arange(num_frames, dtype=torch.float64),
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack(grid, dim=-1).reshape(-1, 3)


def audio_position_ids(
    audio_steps: int,
    mel_slots: int,
    video_frames: int,
    video_height: int = 0,
    video_width: int = 0,
    pe_type: str = "interleave_offset",
) -> torch.Tensor:
    """Ids (Ta * M, 3) float64 of the patched audio grid, flattened in (time, mel) order with mel fastest.

    ``video_frames/height/width`` are the patched video grid sizes (Tv, Hp, Wp). In audio-only mode pass
    Hp = Wp = 0, which turns ``interleave_offset`` into ``interleave`` as in the official t2a model.
    """
    if pe_type not in AUDIO_PE_TYPES:
        raise ValueError(f"audio_pe_type must be one of {AUDIO_PE_TYPES}, got {pe_type!r}")
    tau = torch.arange(audio_steps, dtype=torch.float64)
    mel = torch.arange(mel_slots, dtype=torch.float64)
    # Official quirk (docs/official.md §2.2 / §11.4): float64 linspace then ceil; do not replace by a rational formula.
    aligned = torch.linspace(0, video_frames - 1, audio_steps, dtype=torch.float64)
    if pe_type == "vanilla":
        t_ids, h_ids, w_offset = tau, tau, 0
    elif pe_type == "interpolate":
        t_ids, h_ids, w_offset = aligned, aligned, 0
    elif pe_type == "interleave":
        t_ids, h_ids, w_offset = aligned.ceil(), tau, 0
    else:
        t_ids, h_ids, w_offset = aligned.ceil(), video_height + tau, video_width
    ids = torch.empty(audio_steps, mel_slots, 3, dtype=torch.float64)
    ids[..., 0] = t_ids[:, None]
    ids[..., 1] = h_ids[:, None]
    ids[..., 2] = mel[None, :] + w_offset
    return ids.reshape(-1, 3)


class TARotaryEmbedding(nn.Module):
    """Turns (N, 3) position ids into Wan-style RoPE tables (44/42/42 split of a 128-dim head)."""

    def __init__(self, attention_head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.attention_head_dim = attention_head_dim
        self.theta = theta
        h_dim = w_dim = 2 * (attention_head_dim // 6)
        self.axis_dims = (attention_head_dim - h_dim - w_dim, h_dim, w_dim)

    def inverse_frequencies(self) -> list[torch.Tensor]:
        return [
            1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim) for dim in self.axis_dims
        ]

    def forward(self, position_ids: torch.Tensor, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.cat(
            [position_ids[:, axis, None] * inv_freq for axis, inv_freq in enumerate(self.inverse_frequencies())],
            dim=-1,
        )
        angles = angles.repeat_interleave(2, dim=-1)[None, :, None, :]
        # MPS has no float64: fall back to float32 there.
        dtype = torch.float32 if device is not None and torch.device(device).type == "mps" else torch.float64
        return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)
