"""One ``.safetensors`` file per JavisDiT++ transformer, for ComfyUI's ``models/diffusion_models/`` folder.

The file holds our diffusers-named weights (LoRA merged) and the model's config as JSON in the safetensors
metadata (key ``javisdit_config``), so it loads without a side file and is told apart from a plain Wan2.1
checkpoint by its header alone. ``python -m javis_core.convert --out NAME.safetensors`` writes one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..models.transformer import JavisDiTTransformer3DModel

CONFIG_KEY = "javisdit_config"


def save_single_file(model: JavisDiTTransformer3DModel, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(config), "format": "pt"})
    return path


def single_file_config(path: str | Path) -> dict | None:
    """The saved config of a JavisDiT++ single file, or None for any other file (e.g. a plain Wan2.1 one)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError):  # not a readable safetensors file
        return None
    return json.loads(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None


def load_single_file(path: str | Path, torch_dtype: torch.dtype | None = None) -> JavisDiTTransformer3DModel:
    config = single_file_config(path)
    if config is None:
        raise ValueError(f"{path} is not a JavisDiT++ single-file checkpoint (no {CONFIG_KEY} in its metadata; "
                         f"write one with python -m javis_core.convert --out NAME.safetensors)")  # fmt: skip
    model = JavisDiTTransformer3DModel.from_config(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(torch_dtype).eval() if torch_dtype is not None else model.eval()
