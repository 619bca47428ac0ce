"""The JavisDiT++ denoiser: Wan2.1 blocks shared by video and audio tokens, with modality-specific FFNs.

Layout of the weights follows diffusers' ``WanTransformer3DModel`` for everything inherited from Wan2.1
(``condition_embedder``, ``blocks.N.attn1``/``attn2``/``ffn``/``scale_shift_table``, ``proj_out``), so a
diffusers-format Wan2.1 transformer loads into the ``t2v`` mode unchanged. The audio branch adds
``audio_patch_embedding``, ``audio_time_proj``, ``blocks.N.audio_ffn``, ``blocks.N.audio_scale_shift_table``,
``audio_proj_out`` and ``audio_scale_shift_table``.

The forward returns the raw Wan velocity (noise - x0) for both modalities, the convention of diffusers'
flow-matching schedulers; the official code returns its negation (docs/official.md §1.5).
Precision follows the official code (docs/official.md §1.6): t is rounded to the model dtype before the float64
sinusoid, the time MLPs and heads run in float32, block norms and modulation run in the activation dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanAttnProcessor,
    WanTimeTextImageEmbedding,
)
from diffusers.utils import BaseOutput, apply_lora_scale

from ..pipelines.requests import MODES, has_audio, has_video
from .ta_rope import AUDIO_PE_TYPES, TARotaryEmbedding, audio_position_ids, video_position_ids

MODEL_TYPES = MODES


@dataclass
class JavisDiTOutput(BaseOutput):
    """Velocity predictions (noise - x0), float32: ``sample`` for video, ``audio_sample`` for audio."""

    sample: torch.Tensor | None = None
    audio_sample: torch.Tensor | None = None


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # weights moved to the input's device too: an offloaded layer (ComfyUI's partial loading) may sit elsewhere
    bias = None if layer.bias is None else layer.bias.to(device=x.device, dtype=torch.float32)
    return F.linear(x.float(), layer.weight.to(device=x.device, dtype=torch.float32), bias)


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's [cos, sin] embedding with frequencies 10000^(-i/half), computed in float64 like the official code."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = timestep.double()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class JavisDiTBlock(nn.Module):
    """Shared self-/cross-attention over [video; audio] tokens, then the FFN of each token's modality (MS-MoE)."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
        has_video: bool = True,
        has_audio: bool = True,
    ):
        super().__init__()
        head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(dim=dim, heads=num_heads, dim_head=head_dim, eps=eps, processor=WanAttnProcessor())
        self.attn2 = WanAttention(
            dim=dim,
            heads=num_heads,
            dim_head=head_dim,
            eps=eps,
            cross_attention_dim_head=head_dim,
            processor=WanAttnProcessor(),
        )
        self.norm2 = nn.LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        # Chunks 0-2 modulate the shared self-attention, 3-5 the video FFN (kept in t2a: chunks 0-2 are used).
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        if has_video:
            self.norm3 = nn.LayerNorm(dim, eps, elementwise_affine=False)
            self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        if has_audio:
            self.audio_norm = nn.LayerNorm(dim, eps, elementwise_affine=False)
            self.audio_ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
            self.audio_scale_shift_table = nn.Parameter(torch.randn(1, 3, dim) / dim**0.5)
        self.has_video = has_video
        self.has_audio = has_audio

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        audio_temb: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        num_video_tokens: int,
    ) -> torch.Tensor:
        dtype = hidden_states.dtype
        # Official precision: the modulation is added in the activation dtype (docs/official.md §1.4).
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
            self.scale_shift_table.to(device=temb.device, dtype=dtype) + temb.to(dtype)
        ).chunk(6, dim=1)
        attn_in = _modulate(self.norm1(hidden_states), shift_msa, scale_msa)
        hidden_states = hidden_states + self.attn1(attn_in, None, None, rotary_emb) * gate_msa
        hidden_states = hidden_states + self.attn2(self.norm2(hidden_states), encoder_hidden_states, None, None)

        video, audio = hidden_states[:, :num_video_tokens], hidden_states[:, num_video_tokens:]
        outputs = []
        if self.has_video and num_video_tokens > 0:
            ffn_in = _modulate(self.norm3(video), c_shift_msa, c_scale_msa)
            outputs.append(video + self.ffn(ffn_in) * c_gate_msa)
        if self.has_audio and audio.shape[1] > 0:
            # stage 1 trains it in fp32 beside a bf16 base
            a_table = self.audio_scale_shift_table.to(device=audio_temb.device, dtype=dtype)
            a_shift, a_scale, a_gate = (a_table + audio_temb.to(dtype)).chunk(3, dim=1)
            outputs.append(audio + self.audio_ffn(_modulate(self.audio_norm(audio), a_shift, a_scale)) * a_gate)
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


# The block returns only the updated [video; audio] tokens (the text features pass through unchanged), which is what
# diffusers' block-level caches (FirstBlockCache, MagCache, ...) need to know to skip it.
TransformerBlockRegistry.register(
    JavisDiTBlock, TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None)
)


class JavisDiTTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin):
    r"""
    Joint audio-video diffusion transformer of JavisDiT++ (Wan2.1-T2V-1.3B extended to audio).

    Args:
        model_type: ``"t2av"`` (joint), ``"t2a"`` (audio only, no video modules) or ``"t2v"`` (plain Wan2.1).
        patch_size: video patch (t, h, w). audio_patch_size: audio patch (time, mel).
        num_attention_heads, attention_head_dim: attention layout (Wan2.1-1.3B: 12 x 128).
        in_channels/out_channels: video latent channels; audio_in_channels/audio_out_channels: audio latent channels.
        text_dim: text-feature width (umT5-xxl 4096). freq_dim: sinusoid width. ffn_dim: FFN hidden width.
        audio_pe_type: TA-RoPE variant, one of ``vanilla``, ``interpolate``, ``interleave``, ``interleave_offset``.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["JavisDiTBlock"]
    _repeated_blocks = ["JavisDiTBlock"]
    # diffusers' defaults also keep "^proj_out$"; the audio head is as precision-sensitive (it runs in float32).
    _skip_layerwise_casting_patterns = [
        "patch_embedding", "condition_embedder", "norm", "audio_time_proj", "^audio_proj_out$"
    ]  # fmt: skip

    @register_to_config
    def __init__(
        self,
        model_type: str = "t2av",
        patch_size: tuple[int, int, int] = (1, 2, 2),
        audio_patch_size: tuple[int, int] = (2, 2),
        num_attention_heads: int = 12,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        audio_in_channels: int = 8,
        audio_out_channels: int = 8,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
        audio_pe_type: str = "interleave_offset",
    ):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        if audio_pe_type not in AUDIO_PE_TYPES:
            raise ValueError(f"audio_pe_type must be one of {AUDIO_PE_TYPES}, got {audio_pe_type!r}")
        dim = num_attention_heads * attention_head_dim
        self.has_video = has_video(model_type)
        self.has_audio = has_audio(model_type)

        self.rope = TARotaryEmbedding(attention_head_dim)
        if self.has_video:
            self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        if self.has_audio:
            self.audio_patch_embedding = nn.Conv2d(
                audio_in_channels, dim, kernel_size=audio_patch_size, stride=audio_patch_size
            )
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=dim, time_freq_dim=freq_dim, time_proj_dim=dim * 6, text_embed_dim=text_dim
        )
        if self.has_audio:
            self.audio_time_proj = nn.Linear(dim, dim * 3)

        self.blocks = nn.ModuleList(
            [
                JavisDiTBlock(dim, ffn_dim, num_attention_heads, cross_attn_norm, eps, self.has_video, self.has_audio)
                for _ in range(num_layers)
            ]
        )

        self.norm_out = nn.LayerNorm(dim, eps, elementwise_affine=False)
        if self.has_video:
            self.proj_out = nn.Linear(dim, out_channels * math.prod(patch_size))
            self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        if self.has_audio:
            self.audio_proj_out = nn.Linear(dim, audio_out_channels * math.prod(audio_patch_size))
            self.audio_scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

        self.gradient_checkpointing = False
        self.reset_parameters_like_official()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters_like_official(self) -> None:
        """Initialisation of docs/official.md §1.8 (relevant when training new parameters from scratch)."""
        if next(self.parameters()).device.type == "meta":
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for conv in (getattr(self, "patch_embedding", None), getattr(self, "audio_patch_embedding", None)):
            if conv is not None:
                nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        for name in ("text_embedder", "time_embedder"):
            for layer in getattr(self.condition_embedder, name).modules():
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.02)
        for head in (getattr(self, "proj_out", None), getattr(self, "audio_proj_out", None)):
            if head is not None:
                nn.init.zeros_(head.weight)

    @torch.no_grad()
    def init_audio_branch_from_video(self, video_ffns: list[dict[str, torch.Tensor]] | None = None) -> None:
        """Stage-1 initialisation (docs/official.md §1.7): audio FFN, modulation and time projection copied from the
        video ones.

        ``video_ffns`` gives the per-block video FFN tensors (``net.0.proj.weight`` ...) when the model has no video
        FFN of its own (t2a mode); otherwise the model's own ``ffn`` is copied.
        """
        if not self.has_audio:
            raise ValueError("init_audio_branch_from_video needs a model with an audio branch (t2av or t2a)")
        dim = self.audio_time_proj.in_features
        self.audio_time_proj.weight.copy_(self.condition_embedder.time_proj.weight[3 * dim :])
        self.audio_time_proj.bias.copy_(self.condition_embedder.time_proj.bias[3 * dim :])
        for index, block in enumerate(self.blocks):
            block.audio_scale_shift_table.copy_(block.scale_shift_table[:, 3:6])
            source = video_ffns[index] if video_ffns is not None else block.ffn.state_dict()
            block.audio_ffn.load_state_dict(source)

    # ------------------------------------------------------------------ forward helpers
    @property
    def activation_dtype(self) -> torch.dtype:
        """The dtype the blocks compute in: the weights' dtype, or the compute dtype of diffusers' layerwise casting
        (whose stored weights may be float8)."""
        layer = self.blocks[0].attn1.to_q
        registry = getattr(layer, "_diffusers_hook", None)
        casting = registry.get_hook("layerwise_casting") if registry is not None else None
        return casting.compute_dtype if casting is not None else layer.weight.dtype

    def _rotary_tables(self, video_grid: tuple | None, audio_grid: tuple | None, num_frames: int | None,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """TA-RoPE cos/sin tables for a token layout. They depend only on the request's size, so they are computed
        once (float64 on the CPU, then copied to the device) and reused by every step, not rebuilt each step."""
        key = (video_grid, audio_grid, None if video_grid else num_frames, str(device))
        cache = self.__dict__.setdefault("_rope_tables", {})
        if key not in cache:
            position_ids = []
            if video_grid is not None:
                position_ids.append(video_position_ids(*video_grid))
            if audio_grid is not None:
                frames, height, width = video_grid if video_grid is not None else ((num_frames - 1) // 4 + 1, 0, 0)
                pe_type = self.config.audio_pe_type
                position_ids.append(audio_position_ids(*audio_grid, frames, height, width, pe_type=pe_type))
            if len(cache) >= 4:  # a few request sizes at a time; the tables of a 480p clip take ~70 MB
                cache.pop(next(iter(cache)))
            cache[key] = self.rope(torch.cat(position_ids), device=device)
        return cache[key]

    def _embed_time(self, timestep: torch.Tensor, with_audio: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
        # Official quirk (docs/official.md §1.6, §11.2): t is rounded to the model dtype before the float64 sinusoid.
        sinusoid = timestep_sinusoid(timestep.to(self.activation_dtype), self.config.freq_dim)
        embedder = self.condition_embedder.time_embedder
        temb = _linear_fp32(embedder.linear_2, F.silu(_linear_fp32(embedder.linear_1, sinusoid)))
        timestep_proj = _linear_fp32(self.condition_embedder.time_proj, F.silu(temb)).unflatten(1, (6, -1))
        audio_proj = None
        if with_audio:
            audio_proj = _linear_fp32(self.audio_time_proj, F.silu(temb)).unflatten(1, (3, -1))
        return temb, timestep_proj, audio_proj

    def _head(self, tokens: torch.Tensor, temb: torch.Tensor, table: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        shift, scale = (table.to(device=temb.device, dtype=torch.float32) + temb[:, None]).chunk(2, dim=1)
        normed = F.layer_norm(tokens.float(), (tokens.shape[-1],), eps=self.config.eps)
        return _linear_fp32(proj, _modulate(normed, shift, scale))

    def _check_inputs(self, video: torch.Tensor | None, audio: torch.Tensor | None, num_frames: int | None) -> None:
        mode = self.config.model_type
        if video is None and audio is None:
            raise ValueError("pass video latents (hidden_states), audio latents (audio_hidden_states) or both")
        if not self.has_video and video is not None:
            raise ValueError(f"model_type {mode!r} has no video branch: pass hidden_states=None")
        if not self.has_audio and audio is not None:
            raise ValueError(f"model_type {mode!r} has no audio branch: pass audio_hidden_states=None")
        if video is None and num_frames is None:
            raise ValueError("audio-only denoising needs num_frames (the clip's frame count) to place the audio RoPE")

    # ------------------------------------------------------------------ forward
    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor | None,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        audio_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        num_frames: int | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> JavisDiTOutput | tuple[torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            hidden_states: video latents (B, C, T, H, W), or None in ``t2a`` mode.
            timestep: (B,) on the 0..1000 scale, 1000 = pure noise.
            encoder_hidden_states: text features (B, L, text_dim).
            audio_hidden_states: audio latents (B, C_a, T_a, F), or None in ``t2v`` mode.
            encoder_attention_mask: (B, L) token mask; masked positions are zeroed before the text MLP, as the
                official model does. Cross-attention itself is unmasked.
            num_frames: the clip's pixel frame count, only used in ``t2a`` mode (virtual video for TA-RoPE).
            attention_kwargs: ``{"scale": s}`` multiplies the loaded LoRA adapters' contribution by s (diffusers'
                ``apply_lora_scale``; 0 gives the base model).
        """
        self._check_inputs(hidden_states, audio_hidden_states, num_frames)
        dtype = self.activation_dtype
        batch_size = (hidden_states if hidden_states is not None else audio_hidden_states).shape[0]
        if timestep.ndim == 0:
            timestep = timestep.expand(batch_size)

        tokens = []
        video_grid = audio_grid = None
        if hidden_states is not None:
            video = self.patch_embedding(hidden_states.to(dtype))
            video_grid = tuple(video.shape[2:])
            tokens.append(video.flatten(2).transpose(1, 2))
        if audio_hidden_states is not None:
            audio = self.audio_patch_embedding(audio_hidden_states.to(dtype))
            audio_grid = tuple(audio.shape[2:])
            tokens.append(audio.flatten(2).transpose(1, 2))
        num_video_tokens = tokens[0].shape[1] if hidden_states is not None else 0
        hidden = torch.cat(tokens, dim=1).contiguous()
        rotary_emb = self._rotary_tables(video_grid, audio_grid, num_frames, hidden.device)

        temb, timestep_proj, audio_proj = self._embed_time(timestep, audio_hidden_states is not None)
        context = encoder_hidden_states.to(dtype)
        if encoder_attention_mask is not None:
            context = context * encoder_attention_mask.to(device=context.device, dtype=torch.bool)[..., None]
        context = self.condition_embedder.text_embedder(context)

        for block in self.blocks:
            args = (hidden, context, timestep_proj, audio_proj, rotary_emb, num_video_tokens)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden = self._gradient_checkpointing_func(block, *args)
            else:
                hidden = block(*args)

        video_out = audio_out = None
        if hidden_states is not None:
            out = self._head(hidden[:, :num_video_tokens], temb, self.scale_shift_table, self.proj_out)
            p_t, p_h, p_w = self.config.patch_size
            out = out.reshape(batch_size, *video_grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
            video_out = out.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if audio_hidden_states is not None:
            out = self._head(hidden[:, num_video_tokens:], temb, self.audio_scale_shift_table, self.audio_proj_out)
            p_t, p_f = self.config.audio_patch_size
            out = out.reshape(batch_size, *audio_grid, p_t, p_f, -1).permute(0, 5, 1, 3, 2, 4)
            audio_out = out.flatten(4, 5).flatten(2, 3)

        if not return_dict:
            return video_out, audio_out
        return JavisDiTOutput(sample=video_out, audio_sample=audio_out)
