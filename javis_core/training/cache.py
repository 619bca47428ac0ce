"""Optional pre-extraction of latents and text embeddings, so the frozen encoders run once instead of every epoch.

Each manifest row is cut once (its largest fitting bucket, a seeded random start) and stored as
``<cache>/latents/<row>.safetensors`` with the umT5 embedding (trimmed to its tokens), the video latent (the Wan
VAE posterior mean, as in training) and the audio posterior's mean and std, so every epoch still draws a fresh
audio latent sample as the official training does (docs/official.md §3.2). ``<cache>/cache.csv`` lists them with the bucket
size. Random crops and bucket dice are fixed at extraction time: that is the price of the speed-up.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils import write_csv
from .data import BucketTable, ManifestDataset, Row

CACHE_MANIFEST = "cache.csv"
CACHE_COLUMNS = ("latent_path", "text", "num_frames", "height", "width")


@torch.no_grad()
def encode_text(text_encoder, prompts: list[str], max_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return text_encoder.encode(prompts, max_length=max_length, device=device)


@torch.no_grad()
def audio_posterior(audio_codec, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled posterior mean and std of the audio VAE for (B, N) waveforms."""
    mel = audio_codec.waveform_to_mel(waveform)
    vae = audio_codec.vae
    p = next(vae.parameters())
    dist = vae.encode(mel.to(p.device, p.dtype)).latent_dist
    scale = audio_codec.scaling_factor
    return dist.mean * scale, dist.std * scale


def build_cache(
    rows: list[Row], kind: str, buckets: BucketTable, encoders, cache_dir: str | Path, fps: float, seed: int,
    max_length: int, device: torch.device | str = "cpu",
) -> Path:  # fmt: skip
    """Encode every row once; returns the cache manifest. Rows whose files fail to read are reported and skipped."""
    cache_dir = Path(cache_dir)
    (cache_dir / "latents").mkdir(parents=True, exist_ok=True)
    dataset = ManifestDataset(rows, kind, fps=fps)
    records = []
    for position, row in enumerate(rows):
        bucket = buckets.for_pair(row.height, row.width, row.num_frames)
        if bucket is None:
            continue
        item = dataset[(position, bucket, random.Random(seed * 7919 + row.index).randrange(2**31))]
        if "error" in item:
            print(f"cache: skipping {item['error']}")
            continue
        embeds, mask = encode_text(encoders.text, [row.text], max_length, device)
        tokens = int(mask.sum())
        tensors = {"text_embeds": embeds[0, :tokens].float().cpu().contiguous()}
        for suffix in ("", "_reject"):
            if item.get(f"audio{suffix}") is not None:
                mean, std = audio_posterior(encoders.audio, item[f"audio{suffix}"][None].to(device))
                tensors[f"audio_mean{suffix}"], tensors[f"audio_std{suffix}"] = mean[0].float().cpu(), std[0].float().cpu()
            if item.get(f"video{suffix}") is not None:
                tensors[f"video{suffix}"] = encoders.video.encode(item[f"video{suffix}"][None].to(device))[0].float().cpu()
        name = f"latents/{row.index:08d}.safetensors"
        save_file(tensors, str(cache_dir / name))
        records.append({"latent_path": name, "text": row.text, "num_frames": bucket.num_frames,
                        "height": bucket.height, "width": bucket.width})  # fmt: skip
    return write_csv(cache_dir / CACHE_MANIFEST, CACHE_COLUMNS, records)


def pad_embeds(embeds: list[torch.Tensor], length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached text embeddings of their own lengths -> zero-padded (B, length, D) and a (B, length) token mask."""
    out = torch.zeros(len(embeds), length, embeds[0].shape[-1], device=device)
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=device)
    for i, e in enumerate(embeds):
        out[i, : len(e)], mask[i, : len(e)] = e.to(out.device), 1
    return out, mask


def read_cache(cache_dir: str | Path) -> list[Row]:
    """Cached rows as :class:`Row` (``path`` = the latent file; size and length = the bucket's)."""
    cache_dir = Path(cache_dir)
    with (cache_dir / CACHE_MANIFEST).open(newline="", encoding="utf-8") as handle:
        return [
            Row(number, cache_dir / r["latent_path"], None, r["text"], int(r["num_frames"]), float(r["height"]),
                float(r["width"]), 0.0)  # fmt: skip
            for number, r in enumerate(csv.DictReader(handle), start=1)
        ]


class CachedDataset(torch.utils.data.Dataset):
    """Items like :class:`~javis_core.training.data.ManifestDataset`'s, returning stored latents and embeddings."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item) -> dict:
        position, bucket, _ = item
        row = self.rows[position]
        try:
            tensors = load_file(str(row.path))
        except Exception as error:
            return {"row": row.index, "error": f"row {row.index}: cannot read {row.path}: {error}"}
        return {"row": row.index, "text": row.text, "bucket": (bucket.height, bucket.width, bucket.num_frames),
                "cached": tensors}  # fmt: skip
