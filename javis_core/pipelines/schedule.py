"""The official rectified-flow sampling schedule (docs/official.md §5) on diffusers' flow-matching schedulers.

Time runs from t = 1000 (noise) to 0 (data): x_t = (1 - t/1000) x0 + (t/1000) noise, so sigma = t / 1000.
The official grid u_i = 1 - i/N is warped by the resolution/length shift
r = sqrt(H*W / 512^2) * sqrt(floor(F/17) * 5) * scale, computed in bfloat16 from bfloat16 H, W, F exactly as the
official code does (scale 1 at inference, 5 in training), then t' = r u / (1 + (r - 1) u).
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

SCHEDULERS = ("euler", "unipc")


def official_shift(height: int, width: int, num_frames: int, scale: float = 1.0) -> float:
    """Shift factor r, with the official bf16 arithmetic (e.g. 240x426, 65 frames -> 2.421875, not 2.41872)."""
    bf16 = torch.bfloat16
    h, w, f = (torch.tensor([value], dtype=bf16) for value in (height, width, num_frames))
    ratio_space = (h * w / (512 * 512)).sqrt()
    # Official: F // 17 * 5 (1 for a single frame). Below 17 frames that is 0, a degenerate schedule the
    # official code never meets; we count such short clips as one 17-frame group.
    frames = torch.ones_like(f) if num_frames == 1 else torch.clamp(f // 17, min=1) * 5
    return float((ratio_space * frames.sqrt() * scale)[0])


def shift_sigmas(sigmas: torch.Tensor, shift: float | torch.Tensor) -> torch.Tensor:
    """t' = r u / (1 + (r - 1) u) on the unit scale (used for sampling and for training timesteps)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def official_sigmas(num_steps: int, shift: float) -> list[float]:
    """The N shifted sigmas of the official sampler (1 -> small), float32 arithmetic like the official loop."""
    base = torch.tensor([(1.0 - i / num_steps) * 1000 for i in range(num_steps)], dtype=torch.float32) / 1000
    shifted = shift_sigmas(base, torch.tensor(shift, dtype=torch.float32)) * 1000
    return (shifted / 1000).tolist()


def partial_sigmas(num_steps: int, shift: float, denoise: float = 1.0) -> list[float]:
    """The last ``num_steps`` of a ``round(num_steps / denoise)``-step schedule (ComfyUI KSampler's denoise rule)."""
    if not 0 < denoise <= 1:
        raise ValueError(f"denoise must be in (0, 1] (got {denoise!r})")
    total = max(num_steps, round(num_steps / denoise))
    return official_sigmas(total, shift)[total - num_steps :]


def make_scheduler(name: str = "euler"):
    """A diffusers flow-matching scheduler that takes the official sigmas unchanged (its own shift is 1)."""
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0
        )
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")
