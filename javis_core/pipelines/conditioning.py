"""Reference latents and per-frame masks: the official "replacement" conditioning of JavisDiT.

The official inference (``apply_va_mask_strategy`` in javisdit/utils/inference_utils.py and
``RFLOW.multimodal_sample`` in javisdit/schedulers/rf/__init__.py) writes VAE-encoded reference latents into the
initial noise and gives every latent frame (video) or latent step (audio) a mask value m: 1 = generated freely,
m < 1 = held at the reference while the sampler's t (1000 = noise, 0 = data) is above 1000 m. At the first step with
t <= 1000 m the network sees a noised copy of the reference, but the Euler update is applied to the clean reference.
m = 0 keeps the reference clean for the whole run (hard replacement); fractional m is an edit ratio (strength).

Audio and video windows: one Wan latent frame is 4 frames at 16 fps (0.25 s) and one audio latent is 4 mel hops of
10 ms (0.04 s), so a latent frame spans 6.25 audio latents. This project maps video windows to audio windows at that
ratio. The official code uses 5.3125 (``v2a_t_scale``) and snaps video starts to multiples of 5 latent frames
(``align=5`` in its v1.0 configs); ``compat=True`` reproduces both for parity with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sizes import FPS

AUDIO_LATENTS_PER_VIDEO_LATENT = 6.25
OFFICIAL_ALIGN = 5
MODALITIES = {0: "both", 1: "video", 2: "audio", 3: "audio+image"}


def official_v2a_scale(fps: float = FPS) -> float:
    """The official frame-to-audio-latent factor ``1/5*17/fps/(10.24/1024)/4`` (5.3125 at 16 fps)."""
    return 1 / 5 * 17 / fps / (10.24 / 1024) / 4


@dataclass
class LatentCondition:
    """Reference latents for one modality and what the sampler does with them.

    ``latents``: (B, C, T, ...) reference values, read only where ``written``; ``mask``: (B, T) float, 1 = generated
    freely, m < 1 = kept at the reference while t > 1000 m; ``written``: (B, T) bool, frames whose initial noise is
    replaced by the reference (usually ``mask < 1``)."""

    latents: torch.Tensor
    mask: torch.Tensor
    written: torch.Tensor

    @classmethod
    def empty(cls, shape: tuple[int, ...], device=None) -> "LatentCondition":
        """Nothing given: every frame free (the all-ones masks the official code builds for unconditioned samples)."""
        batch, length = shape[0], shape[2]
        return cls(
            latents=torch.zeros(shape, device=device),
            mask=torch.ones(batch, length, device=device),
            written=torch.zeros(batch, length, dtype=torch.bool, device=device),
        )

    def check(self, shape: tuple[int, ...], name: str) -> None:
        if tuple(self.latents.shape) != tuple(shape):
            raise ValueError(f"{name}.latents must have shape {tuple(shape)} for this request "
                             f"(got {tuple(self.latents.shape)})")  # fmt: skip
        for field in ("mask", "written"):
            value = getattr(self, field)
            if tuple(value.shape) != (shape[0], shape[2]):
                raise ValueError(f"{name}.{field} must have shape {(shape[0], shape[2])} (one value per latent frame; "
                                 f"got {tuple(value.shape)})")  # fmt: skip
        if not bool(((self.mask >= 0) & (self.mask <= 1)).all()):
            raise ValueError(f"{name}.mask values must be in [0, 1] (1 = free, 0 = kept at the reference)")

    def to(self, device, dtype=torch.float32) -> "LatentCondition":
        return LatentCondition(self.latents.to(device, dtype), self.mask.to(device, torch.float32),
                               self.written.to(device, torch.bool))  # fmt: skip

    def place(self, sample: int, reference: torch.Tensor, ref_start: int, target_start: int, length: int,
              strength: float) -> int:  # fmt: skip
        """Copy ``reference[:, ref_start:ref_start+length]`` into frames ``target_start...`` of one sample with mask
        value ``strength``; the length is cut to what fits in both (as the official code does). Returns it."""
        length = min(length, self.latents.shape[2] - target_start, reference.shape[1] - ref_start)
        if length <= 0:
            return 0
        window = slice(target_start, target_start + length)
        self.latents[sample, :, window] = reference[:, ref_start : ref_start + length].to(self.latents)
        self.mask[sample, window] = strength
        self.written[sample, window] = True
        return length

    def write_into(self, noise: torch.Tensor) -> torch.Tensor:
        """The initial noise with the reference frames written in."""
        return torch.where(_frames(self.written, noise), self.latents.to(noise), noise)


def _frames(per_frame: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, T) -> broadcastable against (B, C, T, ...)."""
    return per_frame.view(per_frame.shape[0], 1, per_frame.shape[1], *([1] * (like.ndim - 3)))


class MaskedSampling:
    """The official per-step masking for one modality (``RFLOW.multimodal_sample``).

    ``model_input`` gives what the network sees at step t; ``after_step`` keeps held frames at the reference.
    With ``draw_every_step`` one noise tensor is drawn per call, as the official loop does (needed to reproduce
    its random stream); otherwise only at a step where some frame crosses over."""

    def __init__(self, condition: LatentCondition, draw_every_step: bool = False) -> None:
        self.condition = condition
        self.mask = condition.mask
        self.noised = condition.mask == 1
        self.active = self.noised.clone()
        self.draw_every_step = draw_every_step

    def model_input(self, latents: torch.Tensor, t: torch.Tensor, draw) -> torch.Tensor:
        self.active = self.mask * 1000 >= t.float()
        crossing = self.active & ~self.noised
        self.noised = self.active
        if not (self.draw_every_step or bool(crossing.any())):
            return latents
        noise = draw(latents.shape)
        keep = 1 - t.float() / 1000
        noised = keep * latents + (1 - keep) * noise
        return torch.where(_frames(crossing, latents), noised, latents)

    def after_step(self, stepped: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        return torch.where(_frames(self.active, stepped), stepped, before)


# ---------------------------------------------------------------------------------------------- official strategy
def _nearest_multiple(value: int, point: int, max_value: int) -> int:
    """``find_nearest_point`` of the official inference utils: round to a multiple of ``point`` (half up, and never
    onto the last multiple below ``max_value``)."""
    t = value // point
    if value % point > point / 2 and t < max_value // point - 1:
        t += 1
    return t * point


def parse_official_strategy(strategy: str) -> list[tuple[int, int, int, int, int, float, int]]:
    """``"loop,ref_id,ref_start,target_start,length,edit_ratio,modality"`` groups joined by ``;``; missing trailing
    fields take the official defaults (0,0,0,0,1,0,0)."""
    defaults = ["0", "0", "0", "0", "1", "0", "0"]
    groups = []
    for group in filter(None, (strategy or "").split(";")):
        fields = group.split(",")
        if not 1 <= len(fields) <= 7:
            raise ValueError(f"mask strategy group {group!r} must have 1 to 7 comma-separated fields")
        fields += defaults[len(fields) :]
        loop, ref_id, ref_start, target_start, length = (int(f) for f in fields[:5])
        groups.append((loop, ref_id, ref_start, target_start, length, float(fields[5]), int(fields[6])))
    return groups


def official_conditions(
    strategies: list[str],
    video_refs: list[list[torch.Tensor]],
    audio_refs: list[list[torch.Tensor]],
    video_shape: tuple[int, ...],
    audio_shape: tuple[int, ...],
    loop: int = 0,
    align: int | None = OFFICIAL_ALIGN,
    fps: float = FPS,
) -> tuple[LatentCondition, LatentCondition]:
    """Reference latents and masks exactly as the official ``apply_va_mask_strategy`` builds them, quirks included
    (video starts snapped to ``align``; audio windows at 5.3125 latents per video latent at 16 fps; modality 2 takes
    the raw numbers; modality 3 freezes the whole audio). ``video_refs[i]`` / ``audio_refs[i]``: sample i's
    references, (C, T, H, W) and (C, T, M), indexed by ``ref_id``."""
    video, audio = LatentCondition.empty(video_shape), LatentCondition.empty(audio_shape)
    scale = official_v2a_scale(fps)
    video_len, audio_len = video_shape[2], audio_shape[2]
    for i, strategy in enumerate(strategies):
        for group in parse_official_strategy(strategy):
            loop_id, ref_id, v_ref_start, v_target_start, v_length, ratio, modality = group
            if loop_id != loop:
                continue
            if modality not in MODALITIES:
                raise ValueError(f"mask strategy modality must be one of {sorted(MODALITIES)} (got {modality})")
            try:
                v_ref, a_ref = video_refs[i][ref_id], audio_refs[i][ref_id]
            except IndexError:
                raise ValueError(f"sample {i}: the official strategy reads reference {ref_id} of both the video and "
                                 "the audio references whatever the modality; give both") from None  # fmt: skip
            if modality in (0, 1, 3):
                if v_ref_start < 0:
                    v_ref_start += v_ref.shape[1]
                if v_target_start < 0:
                    v_target_start += video_len
                if v_length == -1:
                    v_length = video_len
                if align is not None:
                    v_ref_start = _nearest_multiple(v_ref_start, align, v_ref.shape[1])
                    v_target_start = _nearest_multiple(v_target_start, align, video_len)
                video.place(i, v_ref, v_ref_start, v_target_start, v_length, ratio)
                if modality == 3:
                    audio.place(i, a_ref, 0, 0, audio_len, 0.0)
                    audio.mask[i] = 0.0
            if modality in (0, 2):
                a_length = int(v_length * scale) if v_length > 0 else audio_len
                audio.place(i, a_ref, int(v_ref_start * scale), int(v_target_start * scale), a_length, ratio)
    return video, audio


# ---------------------------------------------------------------------------------------------- product windows
def audio_window(video_start: int, video_length: int, audio_len: int, compat: bool = False) -> tuple[int, int]:
    """The audio latent window (start, length) that covers video latent frames ``video_start...+video_length``:
    at the true 6.25 audio latents per latent frame, or the official 5.3125 truncation with ``compat``."""
    if compat:
        scale = official_v2a_scale()
        start, length = int(video_start * scale), int(video_length * scale)
    else:
        start = round(video_start * AUDIO_LATENTS_PER_VIDEO_LATENT)
        length = round((video_start + video_length) * AUDIO_LATENTS_PER_VIDEO_LATENT) - start
    start = min(start, audio_len)
    return start, min(length, audio_len - start)
