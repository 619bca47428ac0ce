"""Wan2.1 video VAE wrapper: shapes, latent normalisation, frame-count checks, loading (docs/official.md §3.1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from javis_core.codecs.video import (
    WAN_LATENTS_MEAN,
    WAN_LATENTS_STD,
    WAN_VAE_FILE,
    VideoCodec,
    decoded_video_size,
    save_tiny_wan_vae,
    tiny_video_vae,
    video_latent_shape,
)


@pytest.fixture(scope="module")
def codec() -> VideoCodec:
    return VideoCodec(tiny_video_vae())


def frames(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=gen) * 2 - 1


def test_encode_decode_shapes(codec: VideoCodec) -> None:
    x = frames(1, 33, 64, 96)
    latents = codec.encode(x)
    assert latents.shape == (1, 16, 9, 8, 12) and latents.dtype == torch.float32
    assert latents.shape[1:] == codec.latent_shape(33, 64, 96)
    video = codec.decode(latents)
    assert video.shape == (1, 3, 33, 64, 96) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1


def test_normalisation_uses_latents_mean_std(codec: VideoCodec) -> None:
    assert codec.vae.config.latents_mean == WAN_LATENTS_MEAN and codec.vae.config.latents_std == WAN_LATENTS_STD
    x = frames(2, 5, 16, 24, seed=1)
    latents = codec.encode(x)
    with torch.no_grad():
        raw = codec.vae.encode(x).latent_dist.mean
    mean = torch.tensor(WAN_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN_LATENTS_STD).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(latents, (raw - mean) / std)
    # decode undoes the normalisation: same as decoding the raw posterior mean
    with torch.no_grad():
        expected = codec.vae.decode(raw).sample
    torch.testing.assert_close(codec.decode(latents), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(codec.encode(x), latents)  # posterior mean: deterministic


@pytest.mark.parametrize("num_frames", [34, 0, 32])
def test_bad_frame_count(codec: VideoCodec, num_frames: int) -> None:
    with pytest.raises(ValueError, match=f"num_frames={num_frames}"):
        codec.encode(frames(1, num_frames, 16, 16)) if num_frames else codec.latent_shape(num_frames, 16, 16)


def test_bad_inputs(codec: VideoCodec) -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(frames(1, 5, 20, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        codec.encode(torch.zeros(1, 5, 16, 16))


def test_latent_shape_and_decoded_size(codec: VideoCodec) -> None:
    assert codec.latent_shape(65, 240, 426) == (16, 17, 30, 54)
    assert codec.decoded_size(240, 426) == (240, 432)
    assert video_latent_shape(81, 480, 854) == (16, 21, 60, 108) and decoded_video_size(480, 854) == (480, 864)
    assert video_latent_shape(65, 360, 640) == (16, 17, 46, 80) and decoded_video_size(360, 640) == (368, 640)
    assert video_latent_shape(33, 240, 426) == (16, 9, 30, 54)


def test_tiling_slicing_passthrough(codec: VideoCodec) -> None:
    codec.enable_tiling()
    codec.enable_slicing()
    assert codec.vae.use_tiling and codec.vae.use_slicing
    codec.disable_tiling()
    codec.disable_slicing()
    assert not codec.vae.use_tiling and not codec.vae.use_slicing


def test_save_and_reload(codec: VideoCodec, tmp_path: Path) -> None:
    save_tiny_wan_vae(tmp_path)
    loaded = VideoCodec.from_pretrained(tmp_path)
    x = frames(1, 5, 16, 16, seed=2)
    assert torch.equal(loaded.encode(x), codec.encode(x))
    assert VideoCodec.from_pretrained(tmp_path / "vae", subfolder=None).latent_channels == 16
    with pytest.raises(ValueError, match="config.json"):
        VideoCodec.from_pretrained(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------- original format
_RESNET = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
           "conv2": "residual.6", "conv_shortcut": "shortcut"}  # fmt: skip


def _resnet_key(prefix: str, rest: str) -> str:
    for new, old in _RESNET.items():
        if rest == new or rest.startswith(new + "."):
            return f"{prefix}.{old}{rest[len(new) :]}"
    return f"{prefix}.{rest}"


def to_wan_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKLWan keys -> original WanVAE_ keys (inverse of diffusers' converter for Wan2.1)."""
    out = {}
    for key, value in sd.items():
        k = key.replace("post_quant_conv.", "conv2.") if key.startswith("post_quant_conv.") else key
        k = k.replace("quant_conv.", "conv1.") if k.startswith("quant_conv.") else k
        k = re.sub(r"^(en|de)coder\.conv_in\.", r"\1coder.conv1.", k)
        k = re.sub(r"^(en|de)coder\.norm_out\.", r"\1coder.head.0.", k)
        k = re.sub(r"^(en|de)coder\.conv_out\.", r"\1coder.head.2.", k)
        k = re.sub(r"^(en|de)coder\.mid_block\.attentions\.0\.", r"\1coder.middle.1.", k)
        if m := re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$", k):
            k = _resnet_key(f"{m[1]}.middle.{2 * int(m[2])}", m[3])
        elif m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", k):
            k = _resnet_key(f"encoder.downsamples.{m[1]}", m[2])
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", k):
            k = _resnet_key(f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}", m[3])
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", k):
            k = f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        out[k] = value
    return out


def test_wan_original_roundtrip(codec: VideoCodec, tmp_path: Path) -> None:
    sd = codec.vae.state_dict()
    original = to_wan_original(sd)
    assert set(convert_wan_vae_to_diffusers(dict(original))) == set(sd)  # the inverse is exact
    assert "decoder.upsamples.4.shortcut.weight" in original and "encoder.downsamples.0.residual.0.gamma" in original
    torch.save(original, tmp_path / WAN_VAE_FILE)
    loaded = VideoCodec.from_wan_original(tmp_path)  # the dir form
    assert loaded.vae.config.base_dim == 8 and loaded.vae.config.latents_std == WAN_LATENTS_STD
    x = frames(1, 5, 16, 16, seed=3)
    assert torch.equal(loaded.encode(x), codec.encode(x))
    assert VideoCodec.from_wan_original(tmp_path / WAN_VAE_FILE, torch_dtype=torch.bfloat16).dtype == torch.bfloat16

    del original["decoder.head.2.weight"]
    torch.save(original, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*decoder\.conv_out\.weight"):
        VideoCodec.from_wan_original(tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=WAN_VAE_FILE):
        VideoCodec.from_wan_original(tmp_path / "missing")
