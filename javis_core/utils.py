"""Small shared helpers."""

from __future__ import annotations

import csv
import importlib
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


def load_component(root: str | Path, name: str, default: type, **kwargs):
    """``root/name`` as the class that ``root/model_index.json`` names for it (diffusers' own dispatch, so a
    saved pipeline may bring codecs of its own), else as ``default``."""
    from diffusers import AutoModel

    root = Path(root)
    if name in import_named_modules(root):
        return AutoModel.from_pretrained(str(root), subfolder=name, **kwargs)
    return default.from_pretrained(str(root / name), **kwargs)


def import_named_modules(root: str | Path) -> dict:
    """Import the modules of this package that ``root/model_index.json`` names (diffusers loads classes only from
    modules already imported); return the index, empty when there is none. Other libraries are left to diffusers."""
    index = Path(root) / "model_index.json"
    components = json.loads(index.read_text()) if index.is_file() else {}
    for entry in components.values():
        if isinstance(entry, list) and entry and str(entry[0]).startswith(__package__ + "."):
            importlib.import_module(entry[0])
    return components


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """A CSV with a header row (the manifests, caches and pair tables of training)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path
