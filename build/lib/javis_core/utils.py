"""Small shared helpers."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}  # fmt: skip


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` -> torch.bfloat16; a ValueError names the allowed values."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of fp32, bf16, fp16 (got {name!r})") from None


def best_device() -> str:
    """CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def saved_class_name(directory: str | Path) -> str | None:
    """The ``_class_name`` a diffusers ``save_pretrained`` wrote to ``directory/config.json`` (None: no config)."""
    config = Path(directory) / "config.json"
    return json.loads(config.read_text()).get("_class_name") if config.exists() else None


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """A CSV with a header row (the manifests, caches and pair tables of training)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path
