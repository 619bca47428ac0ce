"""Loading JavisDiT++ transformer weights from every layout users have, with strict key checks.

Layouts (docs/official.md §7):
* the official release dir: ``model/`` (colossalai shards ``pytorch_model*.bin`` + index, or safetensors, plain
  official keys plus unmerged ``lora_A.default``/``lora_B.default`` tensors) and ``lora/`` (a PEFT adapter that
  is merged at load, W += alpha/r * B @ A);
* a Wan2.1 base checkpoint, original single-file format (official key names) or diffusers format
  (``config.json`` of ``WanTransformer3DModel``); the audio branch then starts as a copy of the video branch;
* our own diffusers layout (``JavisDiTTransformer3DModel.save_pretrained``).

Unlike the official loader (``strict=False`` everywhere) a missing, unexpected or misshapen key is an error that
names the keys and the files they came from.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from torch import nn

from ..pipelines.requests import has_audio, mode_for
from .official_keys import diffusers_to_official_key, official_module_to_diffusers, official_to_diffusers_key
from ..models.transformer import JavisDiTTransformer3DModel

WEIGHT_INDEX_FILES = (
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.bin.index.json",
)
WEIGHT_FILES = (
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
)
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the files and keys at fault."""


# ---------------------------------------------------------------------------------------------------- reading
def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint file or directory (sharded via an index, or a single file)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    for name in WEIGHT_INDEX_FILES:
        index = path / name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as error:
                raise CheckpointError(f"{index} is not a valid weight index ({error})") from error
            files = [path / name for name in dict.fromkeys(weight_map.values())]
            absent = [str(file) for file in files if not file.exists()]
            if absent:
                raise CheckpointError(f"{index} lists shard files that are missing: {absent}")
            return files
    for name in WEIGHT_FILES:
        if (path / name).exists():
            return [path / name]
    singles = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pth"))
    if len(singles) == 1:
        return singles
    raise CheckpointError(
        f"no weights found in {path}: expected one of {WEIGHT_INDEX_FILES + WEIGHT_FILES} "
        f"(found {sorted(p.name for p in path.iterdir())})"
    )


def _torch_load(file: Path) -> dict:
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error) and "zip" not in str(error):
            raise
        return torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mmapped


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of a checkpoint and the file each came from. ``.bin``/``.pth`` are memory-mapped."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file in weight_files(path):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    shard = {key: handle.get_tensor(key) for key in handle.keys()}
            else:
                shard = _torch_load(file)
        except Exception as error:  # torch and safetensors raise several types for corrupt files
            raise CheckpointError(f"cannot read weight file {file}: {error}") from error
        if not isinstance(shard, dict):
            raise CheckpointError(f"{file} does not hold a state dict")
        if isinstance(shard.get("state_dict"), dict):
            shard = shard["state_dict"]
        for key, tensor in shard.items():
            tensors[key] = tensor
            origin[key] = file
    return tensors, origin


# ---------------------------------------------------------------------------------------------------- config
def _official_name(key: str) -> str:
    try:
        return diffusers_to_official_key(key)
    except KeyError:
        return key


def infer_config(shapes: dict[str, torch.Size], num_attention_heads: int | None = None) -> dict:
    """Model config from tensor shapes in our naming. Head count is not in the shapes: Wan uses 128-dim heads."""
    has_video = "patch_embedding.weight" in shapes
    has_audio = "audio_patch_embedding.weight" in shapes or any(".audio_ffn." in key for key in shapes)
    time_in = shapes["condition_embedder.time_embedder.linear_1.weight"]
    dim = int(time_in[0])
    ffn_key = "blocks.0.ffn.net.0.proj.weight" if "blocks.0.ffn.net.0.proj.weight" in shapes else (
        "blocks.0.audio_ffn.net.0.proj.weight"
    )
    if num_attention_heads is None and dim % 128:
        raise CheckpointError(f"hidden size {dim} is not a multiple of 128, Wan2.1's head width: the head count cannot "
                              "be told from the weights; give it (javis_core.convert --num-heads N)")  # fmt: skip
    heads = num_attention_heads or max(dim // 128, 1)
    config = {
        "model_type": mode_for(has_video, has_audio),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "text_dim": int(shapes["condition_embedder.text_embedder.linear_1.weight"][1]),
        "freq_dim": int(time_in[1]),
        "ffn_dim": int(shapes[ffn_key][0]),
        "num_layers": len({key.split(".")[1] for key in shapes if key.startswith("blocks.")}),
        "cross_attn_norm": "blocks.0.norm2.weight" in shapes,
    }
    if has_video:
        weight = shapes["patch_embedding.weight"]
        config["in_channels"] = int(weight[1])
        config["patch_size"] = tuple(int(size) for size in weight[2:])
        config["out_channels"] = int(shapes["proj_out.weight"][0]) // math.prod(config["patch_size"])
    if "audio_patch_embedding.weight" in shapes:
        weight = shapes["audio_patch_embedding.weight"]
        config["audio_in_channels"] = int(weight[1])
        config["audio_patch_size"] = tuple(int(size) for size in weight[2:])
        config["audio_out_channels"] = int(shapes["audio_proj_out.weight"][0]) // math.prod(config["audio_patch_size"])
    return config


# ---------------------------------------------------------------------------------------------------- LoRA
def read_official_lora(lora_dir: str | Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """A PEFT adapter dir -> ({our module path: (A, B)}, scale alpha/r or alpha/sqrt(r) for rsLoRA)."""
    lora_dir = Path(lora_dir)
    config_file = lora_dir / "adapter_config.json"
    if not config_file.exists():
        raise CheckpointError(f"LoRA dir {lora_dir} has no adapter_config.json")
    config = json.loads(config_file.read_text())
    rank, alpha = config["r"], config["lora_alpha"]
    scale = alpha / rank**0.5 if config.get("use_rslora") else alpha / rank
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (lora_dir / name).exists():
            tensors, _ = read_weights(lora_dir / name)
            break
    else:
        raise CheckpointError(f"LoRA dir {lora_dir} has no adapter_model.safetensors or adapter_model.bin")
    pairs, unknown = _lora_pairs(tensors)
    if unknown:
        raise CheckpointError(f"LoRA adapter {lora_dir} has keys that are not LoRA A/B weights: {unknown[:10]}")
    return pairs, scale


def _lora_pairs(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    halves: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        match = _LORA_KEY.match(key)
        if not match:
            unknown.append(key)
            continue
        module, which = match.groups()
        halves.setdefault(module, {})[which] = tensor
    pairs = {}
    for module, half in halves.items():
        if set(half) != {"A", "B"}:
            raise CheckpointError(f"LoRA weights of {module} are incomplete: only lora_{''.join(half)} found")
        try:
            target = official_module_to_diffusers(module)
        except KeyError:
            raise CheckpointError(f"LoRA adapter targets an unknown module {module!r}") from None
        pairs[target] = (half["A"], half["B"])
    return pairs, unknown


@torch.no_grad()
def merge_lora_(state_dict: dict[str, torch.Tensor], pairs: dict, scale: float) -> None:
    """W += scale * B @ A in place, delta computed in float32 and added with one rounding (docs/official.md §1.6)."""
    for module, (lora_a, lora_b) in pairs.items():
        key = f"{module}.weight"
        if key not in state_dict:
            raise CheckpointError(f"LoRA targets {module}, which the model does not have")
        weight = state_dict[key]
        delta = scale * (lora_b.float() @ lora_a.float())
        if delta.shape != weight.shape:
            raise CheckpointError(f"LoRA delta for {module} has shape {tuple(delta.shape)}, weight {tuple(weight.shape)}")
        # In place: mmapped shards are copy-on-write, so this costs no second copy of the weights. A bf16
        # weight receives the fp32 delta with a single rounding, as PEFT's merge does.
        weight.add_(delta)


# ---------------------------------------------------------------------------------------------------- assembling
def audio_branch_from_video(state_dict: dict[str, torch.Tensor], num_layers: int, dim: int) -> dict[str, torch.Tensor]:
    """Stage-1 init (docs/official.md §1.7): audio FFN <- video FFN, audio modulation <- chunks 3-5, audio time proj <- rows 3D:6D."""
    derived = {
        "audio_time_proj.weight": state_dict["condition_embedder.time_proj.weight"][3 * dim :].clone(),
        "audio_time_proj.bias": state_dict["condition_embedder.time_proj.bias"][3 * dim :].clone(),
    }
    for index in range(num_layers):
        prefix = f"blocks.{index}."
        derived[prefix + "audio_scale_shift_table"] = state_dict[prefix + "scale_shift_table"][:, 3:6].clone()
        for part in ("net.0.proj.weight", "net.0.proj.bias", "net.2.weight", "net.2.bias"):
            derived[f"{prefix}audio_ffn.{part}"] = state_dict[f"{prefix}ffn.{part}"].clone()
    return derived


def fresh_audio_io_params(config: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Official initialisation (docs/official.md §1.8) of the audio patch embedding and head, which Wan has no weights for."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    patch = tuple(config.get("audio_patch_size", (2, 2)))
    conv = nn.Conv2d(config.get("audio_in_channels", 8), dim, kernel_size=patch, stride=patch)
    nn.init.xavier_uniform_(conv.weight.data.view(dim, -1))
    out_features = config.get("audio_out_channels", 8) * patch[0] * patch[1]
    params = {
        "audio_patch_embedding.weight": conv.weight.data,
        "audio_patch_embedding.bias": conv.bias.data,
        "audio_proj_out.weight": torch.zeros(out_features, dim),
        "audio_proj_out.bias": torch.zeros(out_features),
        "audio_scale_shift_table": torch.randn(1, 2, dim) / dim**0.5,
    }
    return {key: value.to(dtype) for key, value in params.items()}


def build_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    config: dict,
    origin: dict[str, Path] | None = None,
    torch_dtype: torch.dtype | None = None,
    source: str = "checkpoint",
    file_key: Callable[[str], str] | None = None,
) -> JavisDiTTransformer3DModel:
    """Meta-construct the model and assign the tensors; every model key must be present with its shape.

    ``file_key`` gives a key's name in the user's file (official naming), shown beside ours in the errors.
    """
    with torch.device("meta"):
        model = JavisDiTTransformer3DModel(**config)
    expected = {key: param.shape for key, param in model.state_dict().items()}
    origin = origin or {}

    def where(key: str) -> str:
        return f"{key} ({origin[key].name})" if key in origin else key

    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = [
        f"{where(key)}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(shape)}"
        for key, shape in expected.items()
        if key in state_dict and state_dict[key].shape != shape
    ]
    if missing or unexpected or misshapen:
        files = sorted({str(path) for path in origin.values()})
        lines = [f"{source} does not match JavisDiTTransformer3DModel({config}); files: {files}"]
        if missing:
            named = [f"{key} (in the file: {file_key(key)})" if file_key else key for key in missing[:20]]
            lines.append(f"missing {len(missing)} keys: {named}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)} keys: {[where(k) for k in unexpected[:20]]}")
        if misshapen:
            lines.append(f"misshapen {len(misshapen)} keys: {misshapen[:20]}")
        raise CheckpointError("\n".join(lines))
    if torch_dtype is not None:
        state_dict = {key: value.to(torch_dtype) for key, value in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def _drop_branch(state_dict: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Keep only the tensors a ``model_type`` has (e.g. run the joint checkpoint audio-only)."""
    video_only = ("patch_embedding.", "proj_out.", "scale_shift_table")
    if model_type == "t2a":
        return {
            key: value
            for key, value in state_dict.items()
            if not key.startswith(video_only) and not re.match(r"blocks\.\d+\.ffn\.", key)
        }
    if model_type == "t2v":
        return {key: value for key, value in state_dict.items() if "audio" not in key}
    return state_dict


def load_official_transformer(
    path: str | Path,
    lora: str | Path | bool | None = "auto",
    model_type: str | None = None,
    audio_pe_type: str = "interleave_offset",
    num_attention_heads: int | None = None,
    torch_dtype: torch.dtype | None = None,
    lora_alpha: float | None = None,
) -> JavisDiTTransformer3DModel:
    """Load the official release dir, its ``model/`` dir, or an original-format Wan2.1 / JavisDiT weight file.

    Args:
        path: release dir (with ``model/`` and optionally ``lora/``), a weight dir or a single weight file.
        lora: ``"auto"`` merges ``<path>/lora`` when present, else the ``lora_A/B.default`` tensors found in the
            shards (scale ``lora_alpha``/r, official alpha 16 by default); a path merges that adapter; False merges none.
        model_type: ``t2av``/``t2a``/``t2v``; inferred from the keys when None. A base Wan2.1 checkpoint loaded as
            ``t2av``/``t2a`` gets its audio branch initialised from the video branch (docs/official.md §1.7).
    """
    path = Path(path)
    weights_path = path / "model" if (path / "model").is_dir() else path
    raw, raw_origin = read_weights(weights_path)
    embedded_lora, _ = _lora_pairs({k: v for k, v in raw.items() if ".lora_" in k})
    state_dict, origin, unknown = {}, {}, []
    for key, tensor in raw.items():
        if ".lora_" in key:
            continue
        clean = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        try:
            ours = official_to_diffusers_key(clean)
        except KeyError:
            unknown.append(f"{key} ({raw_origin[key].name})")
            continue
        state_dict[ours], origin[ours] = tensor, raw_origin[key]
    if unknown:
        raise CheckpointError(f"{weights_path}: keys that are not JavisDiT++/Wan2.1 parameters: {unknown[:20]}")
    if "condition_embedder.time_embedder.linear_1.weight" not in state_dict:
        raise CheckpointError(f"{weights_path}: no time_embedding.0.weight: not a Wan2.1/JavisDiT++ checkpoint")

    config = infer_config({k: v.shape for k, v in state_dict.items()}, num_attention_heads)
    found_type = config["model_type"]
    config["model_type"] = model_type or found_type
    config["audio_pe_type"] = audio_pe_type
    dtype = torch_dtype or next(iter(state_dict.values())).dtype

    lora_dir = path / "lora" if lora == "auto" else (Path(lora) if lora not in (None, False) else None)
    if lora_dir is not None and (lora == "auto" and not lora_dir.is_dir()):
        lora_dir = None
    if lora_dir is not None:
        pairs, scale = read_official_lora(lora_dir)
        merge_lora_(state_dict, pairs, scale)
    elif lora == "auto" and embedded_lora:
        rank = next(iter(embedded_lora.values()))[0].shape[0]
        merge_lora_(state_dict, embedded_lora, (lora_alpha or 16.0) / rank)

    add_audio = has_audio(config["model_type"]) and found_type == "t2v"
    state_dict = _fit_branches(state_dict, config, dtype, add_audio)
    return build_from_state_dict(state_dict, config, origin, torch_dtype, source=str(weights_path),
                                 file_key=_official_name)  # fmt: skip


def load_wan_diffusers_transformer(
    path: str | Path,
    model_type: str = "t2av",
    audio_pe_type: str = "interleave_offset",
    torch_dtype: torch.dtype | None = None,
) -> JavisDiTTransformer3DModel:
    """A diffusers-format Wan2.1 transformer dir (``WanTransformer3DModel`` config + weights) as JavisDiT++."""
    path = Path(path)
    config_file = path / "config.json"
    wan = json.loads(config_file.read_text())
    if wan.get("image_dim") or wan.get("added_kv_proj_dim"):
        raise CheckpointError(f"{config_file}: image-conditioned Wan models (I2V) are not supported")
    keys = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
            "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "eps")  # fmt: skip
    config = {key: wan[key] for key in keys if key in wan}
    config["patch_size"] = tuple(config.get("patch_size", (1, 2, 2)))
    config.update(model_type=model_type, audio_pe_type=audio_pe_type)
    state_dict, origin = read_weights(path)
    dtype = torch_dtype or next(iter(state_dict.values())).dtype
    state_dict = _fit_branches(state_dict, config, dtype, add_audio=has_audio(model_type))
    return build_from_state_dict(state_dict, config, origin, torch_dtype, source=str(path))


def _audio_from_video_base(path: Path, config: dict, model_type: str, torch_dtype: torch.dtype | None,
                           **overrides) -> JavisDiTTransformer3DModel:  # fmt: skip
    """Our t2v save as a t2a/t2av model whose audio branch starts as a copy of the video branch (docs/official.md §1.7)."""
    config, _, _ = JavisDiTTransformer3DModel.extract_init_dict(config)
    config.update(overrides, model_type=model_type)
    state_dict, origin = read_weights(path)
    state_dict = _fit_branches(state_dict, config, next(iter(state_dict.values())).dtype, add_audio=True)
    return build_from_state_dict(state_dict, config, origin, torch_dtype, source=str(path))


def _fit_branches(state_dict: dict, config: dict, dtype: torch.dtype, add_audio: bool) -> dict:
    """Drop the branch ``config["model_type"]`` has no use for; with ``add_audio``, first give a video-only
    state dict an audio branch copied from the video one and fresh audio input/output layers (docs/official.md §1.7)."""
    if add_audio:
        dim = config["num_attention_heads"] * config["attention_head_dim"]
        state_dict.update(audio_branch_from_video(state_dict, config["num_layers"], dim))
        state_dict.update(fresh_audio_io_params(config, dtype))
    return _drop_branch(state_dict, config["model_type"])


def detect_layout(path: str | Path) -> str:
    """``"diffusers"`` (ours), ``"wan_diffusers"``, or ``"official"`` (release dir / original weight files)."""
    path = Path(path)
    config_file = path / "config.json"
    if path.is_dir() and config_file.exists():
        name = json.loads(config_file.read_text()).get("_class_name")
        if name == JavisDiTTransformer3DModel.__name__:
            return "diffusers"
        if name == "WanTransformer3DModel":
            return "wan_diffusers"
    if path.is_dir() and (path / "transformer" / "config.json").exists():
        return detect_layout(path / "transformer")
    return "official"


def load_transformer(
    path: str | Path,
    model_type: str | None = None,
    torch_dtype: torch.dtype | None = None,
    **kwargs,
) -> JavisDiTTransformer3DModel:
    """Load a transformer from any supported layout (see the module docstring)."""
    path = Path(path)
    if path.is_dir() and (path / "transformer" / "config.json").exists():
        path = path / "transformer"
    layout = detect_layout(path)
    if layout == "diffusers":
        config = JavisDiTTransformer3DModel.load_config(path)
        found_type = config.get("model_type", "t2av")
        if has_audio(model_type) and found_type == "t2v":  # a video base (e.g. the demo's stage 0)
            return _audio_from_video_base(path, config, model_type, torch_dtype, **kwargs)
        model = JavisDiTTransformer3DModel.from_pretrained(path, dtype=torch_dtype, **kwargs)
        if model_type and model_type != model.config.model_type:
            raise CheckpointError(f"{path} holds a {model.config.model_type!r} model, not {model_type!r}")
        return model.eval()
    if layout == "wan_diffusers":
        return load_wan_diffusers_transformer(path, model_type or "t2av", torch_dtype=torch_dtype, **kwargs)
    return load_official_transformer(path, model_type=model_type, torch_dtype=torch_dtype, **kwargs)
