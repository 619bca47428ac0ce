"""What each training stage builds and trains (docs/official.md §1.7, §8.2-8.4).

* Stage 0 (not in the paper, which starts from Wan2.1): a ``t2v`` video base trained in full, for models such as
  the offline demo for which no pretrained video DiT exists. Its output is the ``pretrained`` of stage 1.

* Stage 1: a ``t2a`` model from Wan2.1 whose audio branch starts as a copy of the video branch; only the audio
  modules train (patch embedding, head + its modulation, every block's audio FFN and modulation, audio time proj).
* Stage 2: ``t2av`` = Wan2.1 + the stage-1 audio weights, all frozen, plus a LoRA (r 64, alpha 16, dropout 0.05)
  on the 12 official targets of every block.
* Stage 3: the stage-2 model with the stage-2 adapter loaded twice: ``default`` (trained further) and
  ``reference`` (frozen, no dropout); both share the frozen base weights instead of a deep copy of the model.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..loaders.checkpoints import CheckpointError, load_transformer
from ..models.transformer import JavisDiTTransformer3DModel

STAGES = (0, 1, 2, 3)
MODEL_TYPES = {0: "t2v", 1: "t2a", 2: "t2av", 3: "t2av"}
# The 12 official LoRA targets (official_keys.OFFICIAL_LORA_TARGETS) in our module naming.
LORA_TARGETS = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ffn.net.0.proj", "ffn.net.2", "audio_ffn.net.0.proj", "audio_ffn.net.2",
)  # fmt: skip
LORA_TARGET_PATTERN = r"blocks\.\d+\.(?:" + "|".join(re.escape(t) for t in LORA_TARGETS) + ")"
POLICY_ADAPTER, REFERENCE_ADAPTER = "default", "reference"
LORA_DIR, TRANSFORMER_DIR = "lora", "transformer"
# The adapter as peft writes it (PeftModel.from_pretrained) and as diffusers' load_lora_adapter(dir, prefix=None)
# reads it by default: diffusers 0.42 looks for a .bin there unless told use_safetensors=True.
PEFT_CONFIG, PEFT_WEIGHTS, PEFT_PREFIX = "adapter_config.json", "adapter_model.safetensors", "base_model.model."
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.bin"

_STAGE1_TRAINABLE = re.compile(
    r"^(audio_patch_embedding\.|audio_proj_out\.|audio_scale_shift_table$|audio_time_proj\.|"
    r"blocks\.\d+\.audio_ffn\.|blocks\.\d+\.audio_scale_shift_table$)"
)


def is_audio_module_parameter(name: str) -> bool:
    """Parameters stage 1 trains (official ``train_audio_specific_blocks``)."""
    return bool(_STAGE1_TRAINABLE.match(name))


def lora_config(rank: int = 64, alpha: float = 16, dropout: float = 0.05) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_PATTERN)


def load_av_base(
    pretrained: str | Path,
    audio_weights: str | Path | None = None,
    torch_dtype: torch.dtype | None = None,
    audio_pe_type: str | None = None,
) -> JavisDiTTransformer3DModel:
    """The frozen stage-2/3 base: a ``t2av`` model (Wan2.1 or a joint checkpoint) with the stage-1 audio weights;
    ``audio_pe_type`` overrides the audio position ids (the TA-RoPE ablation)."""
    overrides = {"audio_pe_type": audio_pe_type} if audio_pe_type else {}
    model = load_transformer(pretrained, model_type="t2av", torch_dtype=torch_dtype, **overrides)
    if audio_weights is not None:
        audio_model = load_transformer(audio_weights, model_type="t2a", torch_dtype=torch_dtype)
        audio_state = {k: v for k, v in audio_model.state_dict().items() if is_audio_module_parameter(k)}
        own = model.state_dict()
        misshapen = [k for k, v in audio_state.items() if own[k].shape != v.shape]
        if misshapen:
            raise CheckpointError(f"stage-1 weights {audio_weights} do not fit {pretrained}: {misshapen[:10]}")
        model.load_state_dict(audio_state, strict=False)
    return model


def build_stage_model(
    stage: int,
    pretrained: str | Path,
    audio_weights: str | Path | None = None,
    adapter: str | Path | None = None,
    lora: dict | None = None,
    torch_dtype: torch.dtype | None = None,
    audio_pe_type: str | None = None,
) -> JavisDiTTransformer3DModel:
    """The model of a stage with ``requires_grad`` set on exactly the parameters that stage trains."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == 0:
        return load_transformer(pretrained, model_type="t2v", torch_dtype=torch_dtype).requires_grad_(True)
    if stage == 1:
        model = load_transformer(pretrained, model_type="t2a", torch_dtype=torch_dtype)
        model.requires_grad_(False)
        for name, param in model.named_parameters():
            param.requires_grad_(is_audio_module_parameter(name))
        return model
    model = load_av_base(pretrained, audio_weights, torch_dtype, audio_pe_type)
    model.requires_grad_(False)
    if stage == 2 and adapter is None:
        model.add_adapter(lora_config(**(lora or {})), adapter_name=POLICY_ADAPTER)
    else:
        if adapter is None:
            raise ValueError("stage 3 needs model.adapter: the stage-2 LoRA dir (e.g. outputs/stage2_av_sft/lora)")
        load_adapter(model, adapter, POLICY_ADAPTER)
        if stage == 3:
            load_adapter(model, adapter, REFERENCE_ADAPTER)
    model.set_adapters(POLICY_ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_(f".{POLICY_ADAPTER}." in name and ".lora_" in name)
    return model


def save_adapter(model: JavisDiTTransformer3DModel, directory: str | Path, name: str = POLICY_ADAPTER) -> Path:
    """``directory`` as peft saves an adapter (config + weights), plus the copy diffusers reads by default.

    Without a config beside it diffusers takes lora_alpha = r, so that copy has the alpha / r scale folded into
    ``lora_B``: both give the same output.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.peft_config[name]
    if config.use_rslora or config.rank_pattern or config.alpha_pattern:
        raise ValueError("save_adapter writes one rank and alpha for every layer (no rslora or rank patterns)")
    state = get_peft_model_state_dict(model, adapter_name=name)
    weights = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    config.save_pretrained(str(directory))
    save_file({PEFT_PREFIX + key: value for key, value in weights.items()}, str(directory / PEFT_WEIGHTS))
    scale = config.lora_alpha / config.r
    torch.save({key: value * scale if ".lora_B." in key else value for key, value in weights.items()},
               directory / DIFFUSERS_WEIGHTS)  # fmt: skip
    return directory


def load_adapter(model: JavisDiTTransformer3DModel, adapter: str | Path, name: str) -> None:
    """Load a ``save_adapter`` directory (peft's files: the config keeps alpha and dropout) as adapter ``name``."""
    adapter = Path(adapter)
    if not (adapter / PEFT_CONFIG).is_file() or not (adapter / PEFT_WEIGHTS).is_file():
        raise CheckpointError(f"no LoRA adapter at {adapter} (expected {PEFT_CONFIG} and {PEFT_WEIGHTS})")
    config = LoraConfig.from_pretrained(str(adapter))
    weights = {key.removeprefix(PEFT_PREFIX): value for key, value in load_file(str(adapter / PEFT_WEIGHTS)).items()}
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
                "target_modules": config.target_modules, "bias": config.bias}  # fmt: skip
    model.load_lora_adapter(weights, adapter_name=name, prefix=None, metadata=metadata)


@contextmanager
def reference_adapter(model: torch.nn.Module) -> Iterator[None]:
    """Run the frozen stage-2 adapter instead of the policy one: eval mode (no LoRA dropout), no grad.

    Enter it before the policy forward: switching adapters toggles ``requires_grad`` and must not happen while a
    policy graph is alive.
    """
    was_training = model.training
    model.set_adapters(REFERENCE_ADAPTER)
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.set_adapters(POLICY_ADAPTER)
        for name, param in model.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name:
                param.requires_grad_(False)
        model.train(was_training)


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def save_stage_outputs(model: JavisDiTTransformer3DModel, stage: int, output_dir: str | Path, merge: bool) -> list[Path]:
    """Stages 0-1: ``transformer/`` (full t2v / t2a, save_pretrained). Stages 2-3: ``lora/`` (diffusers/peft adapter) and,
    with ``merge``, ``transformer/``: the t2av model with the adapter merged, which the pipeline loads directly.

    Merging changes ``model`` (call it last).
    """
    output_dir = Path(output_dir)
    written = []
    if stage in (0, 1):
        model.save_pretrained(output_dir / TRANSFORMER_DIR)
        return [output_dir / TRANSFORMER_DIR]
    save_adapter(model, output_dir / LORA_DIR, POLICY_ADAPTER)
    written.append(output_dir / LORA_DIR)
    if merge:
        if REFERENCE_ADAPTER in model.peft_config:
            model.delete_adapters(REFERENCE_ADAPTER)
        model.fuse_lora(adapter_names=[POLICY_ADAPTER])
        model.unload_lora()
        model.save_pretrained(output_dir / TRANSFORMER_DIR)
        written.append(output_dir / TRANSFORMER_DIR)
    return written
