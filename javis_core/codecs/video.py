"""Video latent space of JavisDiT++: the Wan2.1 causal 3-D VAE (docs/official.md §3.1) via diffusers ``AutoencoderKLWan``.

Frames (B, 3, T, H, W) in [-1, 1] with T = 4k + 1 -> posterior-mean latents (B, 16, (T-1)/4 + 1, H/8, W/8),
normalised per channel with the config's ``latents_mean``/``latents_std``; decoding inverts that and clamps.

``from_wan_original`` reads ``Wan2.1_VAE.pth`` with diffusers' own key converter (``convert_wan_vae_to_diffusers``)
into a model built from a local config. ``AutoencoderKLWan.from_single_file`` is not used: without ``config=`` it
fetches the diffusers config of ``Wan-AI/Wan2.1-T2V-14B-Diffusers`` from the Hub, which fails offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from torch import nn

from ..utils import load_component
from ..loaders.checkpoints import read_weights
from ..pipelines.requests import TEMPORAL_STRIDE, check_num_frames

WAN_VAE_FILE = "Wan2.1_VAE.pth"
SPATIAL_STRIDE = 8
DIT_PATCH = 2  # latent H/W are rounded up to the DiT's spatial patch (docs/official.md §3.1 get_latent_size)
# docs/official.md §3.1 (identical to AutoencoderKLWan's defaults).
WAN_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
WAN_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]  # fmt: skip


def video_latent_shape(num_frames: int, height: int, width: int, channels: int = 16,
                       spatial_stride: int = SPATIAL_STRIDE) -> tuple[int, int, int, int]:  # fmt: skip
    """(C, T_lat, H_lat, W_lat) for a request (docs/official.md §3.1): T_lat = (T-1)/4 + 1, H_lat = 2*ceil(H/8/2), same for W
    (``spatial_stride`` 8 is Wan's VAE; the demo codec uses 32)."""
    check_num_frames(num_frames)
    step = spatial_stride * DIT_PATCH
    return (channels, (num_frames - 1) // TEMPORAL_STRIDE + 1, DIT_PATCH * -(-height // step),
            DIT_PATCH * -(-width // step))  # fmt: skip


def decoded_video_size(height: int, width: int, spatial_stride: int = SPATIAL_STRIDE) -> tuple[int, int]:
    """Pixel size the decoded video has for a requested size: 240x426 -> 240x432 (docs/official.md §3.1, §11.7)."""
    _, _, h, w = video_latent_shape(1, height, width, spatial_stride=spatial_stride)
    return h * spatial_stride, w * spatial_stride


def spatial_stride_of(vae) -> int:
    """Pixels per latent of a video VAE (``AutoencoderKLWan`` and the demo codec both say it in their config)."""
    return int(getattr(vae.config, "scale_factor_spatial", SPATIAL_STRIDE)) if vae is not None else SPATIAL_STRIDE


class VideoCodec(nn.Module):
    """Wan2.1 VAE with JavisDiT's latent normalisation: ``encode`` frames -> latents, ``decode`` latents -> frames."""

    def __init__(self, vae: AutoencoderKLWan) -> None:  # or demo_codecs.LinearVideoVAE, which has the same API
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    @property
    def spatial_stride(self) -> int:
        return spatial_stride_of(self.vae)

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32, device=device)
        std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32, device=device)
        return mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T_lat, H_lat, W_lat) of a generation request; see :func:`video_latent_shape`."""
        return video_latent_shape(num_frames, height, width, self.latent_channels, self.spatial_stride)

    def decoded_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the decoded video for a requested size; see :func:`decoded_video_size`."""
        return decoded_video_size(height, width, self.spatial_stride)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1], T = 4k+1, H and W multiples of the stride (8) -> float32 (B, 16, T_lat, H/8, W/8).

        Posterior mean only, no sampling (docs/official.md §3.1, §11.14), then (mu - mean_c) / std_c.
        """
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, T, H, W), got shape {tuple(frames.shape)}")
        _, _, num_frames, height, width = frames.shape
        check_num_frames(num_frames)
        if height % self.spatial_stride or width % self.spatial_stride:
            raise ValueError(f"frame height and width must be multiples of {self.spatial_stride}, got {height}x{width}")
        posterior = self.vae.encode(frames.to(device=self.device, dtype=self.dtype)).latent_dist
        mean, std = self._stats(self.device)
        return (posterior.mean.float() - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, 16, T_lat, h, w) -> float32 frames (B, 3, 4*(T_lat-1)+1, 8h, 8w) in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, T, H, W), got {tuple(latents.shape)}")
        mean, std = self._stats(latents.device)
        z = latents.float() * std + mean
        frames = self.vae.decode(z.to(device=self.device, dtype=self.dtype)).sample
        return frames.float().clamp(-1.0, 1.0)

    def enable_tiling(self, **kwargs) -> None:
        """Spatially tiled encode/decode (``AutoencoderKLWan.enable_tiling`` keyword arguments pass through)."""
        self.vae.enable_tiling(**kwargs)

    def disable_tiling(self) -> None:
        self.vae.disable_tiling()

    def enable_slicing(self) -> None:
        """Encode/decode one batch element at a time."""
        self.vae.enable_slicing()

    def disable_slicing(self) -> None:
        self.vae.disable_slicing()

    def save_pretrained(self, path: str | Path, subfolder: str = "vae") -> None:
        """Write the VAE in diffusers format to ``path/subfolder``."""
        self.vae.save_pretrained(str(Path(path) / subfolder))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        subfolder: str | None = "vae",
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> VideoCodec:
        """Load ``path/subfolder`` of a diffusers-format Wan repo (or ``path`` itself if it is the vae dir)."""
        path = Path(path)
        vae_dir = path / subfolder if subfolder else path
        if not (vae_dir / "config.json").exists() and (path / "config.json").exists():
            vae_dir = path
        if not (vae_dir / "config.json").exists():
            raise ValueError(
                f"no Wan VAE in {path}: expected {subfolder + '/' if subfolder else ''}config.json and "
                f"diffusion_pytorch_model.safetensors (diffusers layout, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers); "
                f"for the original {WAN_VAE_FILE} use VideoCodec.from_wan_original"
            )
        vae = load_component(vae_dir.parent, vae_dir.name, AutoencoderKLWan, dtype=torch_dtype)
        return cls(vae.to(device) if device is not None else vae)

    @classmethod
    def from_wan_original(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> VideoCodec:
        """Load the original ``Wan2.1_VAE.pth`` (a file, or the Wan2.1 dir holding it); strict key check.

        Sizes (base dim, z dim) are read from tensor shapes; the layout must be Wan2.1's (dim_mult [1,2,4,4],
        2 res-blocks), which diffusers' converter assumes. dtype None keeps the stored dtype (fp32).
        """
        path = Path(path)
        file = path / WAN_VAE_FILE if path.is_dir() else path
        if not file.exists():
            raise ValueError(f"Wan VAE weights not found: expected {WAN_VAE_FILE} (a file, or a dir holding it) "
                             f"at {path}")  # fmt: skip
        sd = read_weights(file)[0]
        if "encoder.conv1.weight" not in sd or "conv2.weight" not in sd:
            raise ValueError(f"{file} is not an original Wan VAE state dict (no encoder.conv1 / conv2 weights)")
        sd = convert_wan_vae_to_diffusers(sd)
        config = {"base_dim": int(sd["encoder.conv_in.weight"].shape[0]),
                  "z_dim": int(sd["post_quant_conv.weight"].shape[0])}  # fmt: skip
        with torch.device("meta"):  # weights are assigned below; skips random init
            vae = AutoencoderKLWan(**config)
        expected = {k: v.shape for k, v in vae.state_dict().items()}
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        misshapen = [f"{k} {tuple(sd[k].shape)} != {tuple(shape)}"
                     for k, shape in expected.items() if k in sd and sd[k].shape != shape]  # fmt: skip
        if missing or unexpected or misshapen:
            raise ValueError(
                f"{file} does not fit AutoencoderKLWan({config}) after key conversion: missing {_names(missing)}; "
                f"unexpected {_names(unexpected)}; wrong shapes {_names(misshapen)}"
            )
        if torch_dtype is not None:
            sd = {k: v.to(torch_dtype) for k, v in sd.items()}
        vae.load_state_dict(sd, strict=True, assign=True)
        return cls(vae.to(device) if device is not None else vae)


def _names(keys: list[str], limit: int = 10) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


# ---------------------------------------------------------------------------------------------------- tiny
def tiny_video_vae(seed: int = 0, base_dim: int = 8) -> AutoencoderKLWan:
    """A random ``AutoencoderKLWan`` with Wan2.1's structure (z 16, dim_mult [1,2,4,4], 2 res-blocks, stride 4x8x8,
    real latents_mean/std) but a small base dim; same seed, same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(
            base_dim=base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
            temperal_downsample=[False, True, True], latents_mean=WAN_LATENTS_MEAN, latents_std=WAN_LATENTS_STD,
        )  # fmt: skip
    return vae.eval()


def save_tiny_wan_vae(path: str | Path, seed: int = 0) -> AutoencoderKLWan:
    """Write :func:`tiny_video_vae` to ``path/vae`` (diffusers format); returns the saved model."""
    vae = tiny_video_vae(seed)
    vae.save_pretrained(str(Path(path) / "vae"))
    return vae
