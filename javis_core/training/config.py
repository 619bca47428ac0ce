"""The training config: YAML over DEFAULTS, then ``key.sub=value`` overrides, checked before anything loads.

Unknown keys and values of the wrong kind are errors that name the key and, for a typo, the closest known key.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from ..models.ta_rope import AUDIO_PE_TYPES
from ..codecs.text import DEFAULT_NEGATIVE_PROMPT

DEFAULTS: dict = {
    "stage": 2,
    "seed": 42,
    "output_dir": "outputs/run",
    "model": {
        "pretrained": None,  # Wan2.1 (any layout load_transformer reads) or a joint checkpoint
        "audio_weights": None,  # stage 2-3: the stage-1 output's transformer/ dir
        "adapter": None,  # stage 3: the stage-2 output's lora/ dir
        "wan": None,  # text encoder + video VAE (default: pretrained)
        "audioldm2": None,  # audio VAE + vocoder
        "lora": {"rank": 64, "alpha": 16, "dropout": 0.05},
        "audio_pe_type": None,  # stages 2-3: override the audio position ids (e.g. "vanilla" for the ablation)
        "frozen_dtype": "bf16",  # frozen weights are stored in this dtype; trainable ones stay fp32
        "encoder_dtype": "bf16",
        "gradient_checkpointing": True,
    },
    "data": {
        "manifest": None,
        "text_column": "text",
        "fps": 16,
        "buckets": {},
        "num_workers": 4,
        "probe_media": False,
        "cache_dir": None,  # pre-extract latents + text embeddings here once (cache.py)
        "text_max_length": 512,
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
    },
    "train": {
        "epochs": 1,
        "max_steps": None,
        "lr": 1e-4,
        "warmup_steps": 1000,
        # "constant" after a linear warmup is the official schedule; any other name of diffusers'
        # get_scheduler ("cosine", "linear", ...) decays over max_steps (the demo recipe uses "cosine").
        "lr_schedule": "constant",
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "eps": 1e-15,
        "grad_clip": 1.0,
        "gradient_accumulation_steps": 1,
        "mixed_precision": "bf16",
        "ema_decay": 0.99,
        "cfg_dropout": 0.1,
        "shift_scale": 5.0,
        # Stage 2, demo-scale aid (not in the official recipe): with this probability a sample's video is noised
        # to video_noise_scale x the audio's level and only its audio loss counts (objective.clearer_picture).
        "audio_given_video": {"probability": 0.0, "video_noise_scale": 0.1},
        "checkpoint_every": 1000,
        "checkpoints_total_limit": None,
        "log_every": 1,
        "log_with": "auto",  # "tensorboard", "csv" (always written), "auto" = tensorboard when installed
        "resume_from": None,  # "latest" or a checkpoint dir
        "merge_lora": True,
        # Debugging aid: draw the same t, noise and CFG dropout at every step (seeded), so that a model fed one
        # batch can memorise it exactly; the classic "overfit one batch" check. Never for real training.
        "fixed_noise": False,
    },
    "dpo": {"beta": {"audio": 1000.0, "video": 3000.0}, "sft_weight": 0.1},
}


# Entries whose keys the user names (bucket names), or whose keys are fixed but not all given.
FREE_FORM = {"data.buckets"}
# Keys whose default is None: the kind of value they take when set.
OPTIONAL = {
    "model.pretrained": str, "model.audio_weights": str, "model.adapter": str, "model.wan": str,
    "model.audioldm2": str, "model.audio_pe_type": str, "data.manifest": str, "data.cache_dir": str,
    "train.max_steps": int, "train.checkpoints_total_limit": int, "train.resume_from": str,
}  # fmt: skip
CHOICES = {
    "model.frozen_dtype": ("fp32", "bf16", "fp16"),
    "model.encoder_dtype": ("fp32", "bf16", "fp16"),
    "model.audio_pe_type": AUDIO_PE_TYPES,
    "train.mixed_precision": ("fp32", "no", "bf16", "fp16"),
    "train.log_with": ("auto", "tensorboard", "csv"),
}
RANGES = {  # inclusive bounds; None = open
    "train.lr": (0.0, None), "train.epochs": (1, None), "train.max_steps": (1, None), "train.warmup_steps": (0, None),
    "train.gradient_accumulation_steps": (1, None), "train.ema_decay": (0.0, 1.0), "train.cfg_dropout": (0.0, 1.0),
    "train.checkpoint_every": (1, None), "train.log_every": (1, None), "train.grad_clip": (0.0, None),
    "train.audio_given_video.probability": (0.0, 1.0), "train.audio_given_video.video_noise_scale": (0.0, 1.0),
    "model.lora.rank": (1, None), "model.lora.dropout": (0.0, 1.0), "data.num_workers": (0, None),
    "data.fps": (1, None), "data.text_max_length": (1, None),
}  # fmt: skip
KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


class ConfigError(ValueError):
    """A training config that names an unknown key or gives a key a value it cannot take."""


def _known_keys(node: dict = DEFAULTS, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(prefix + key)
        if isinstance(value, dict) and prefix + key not in FREE_FORM:
            keys += _known_keys(value, f"{prefix}{key}.")
    return keys


def _unknown(path: str, value: Any, where: str) -> ConfigError:
    while isinstance(value, dict) and len(value) == 1:  # name the whole key: trian.max_steps, not trian
        key, value = next(iter(value.items()))
        path = f"{path}.{key}"
    close = difflib.get_close_matches(path, _known_keys(), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{where}: unknown key {path}{hint}")


def _merge(base: dict, update: dict, where: str, prefix: str = "", replace_free_form: bool = True) -> dict:
    merged = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{prefix}{key}"
        if key not in base:
            raise _unknown(path, value, where)
        if path in FREE_FORM:
            keep = {} if replace_free_form or not isinstance(base[key], dict) else base[key]
            merged[key] = {**keep, **value} if isinstance(value, dict) else value
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {path} takes the keys {', '.join(base[key])}, got {value!r}")
            merged[key] = _merge(base[key], value, where, path + ".", replace_free_form)
        else:
            merged[key] = value
    return merged


def _override(config: dict, override: str) -> dict:
    key, sep, raw = override.partition("=")
    if not sep:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    value: Any = yaml.safe_load(raw)
    for part in reversed(key.split(".")):
        value = {part: value}
    return _merge(config, value, f"override {override!r}", replace_free_form=False)  # data.buckets.480p=... adds one


def _checked(value: Any, kind: type, path: str) -> Any:
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is bool or isinstance(value, bool):
        fits = kind is bool and isinstance(value, bool)
    elif kind is float:
        fits = isinstance(value, (int, float))
    else:
        fits = isinstance(value, kind)
    if not fits:
        raise ConfigError(f"{path} must be {KINDS[kind]}, got {value!r}")
    return float(value) if kind is float else value


def _check_values(config: dict, defaults: dict = DEFAULTS, prefix: str = "") -> None:
    for key, default in defaults.items():
        path, value = prefix + key, config[key]
        if path in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping, got {value!r}")
            continue
        if isinstance(default, dict):
            _check_values(value, default, path + ".")
            continue
        if value is None and default is None:
            continue
        kind = OPTIONAL.get(path) or type(default)
        config[key] = value = _checked(value, float if kind is int and isinstance(default, float) else kind, path)
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"{path} must be one of {', '.join(CHOICES[path])}, got {value!r}")
        low, high = RANGES.get(path, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"{path} must be {bounds}, got {value!r}")


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """YAML config over DEFAULTS, then ``a.b=value`` overrides; relative paths stay relative to the cwd."""
    config = _merge(DEFAULTS, yaml.safe_load(Path(path).read_text()) or {}, f"config {path}")
    for override in overrides:
        config = _override(config, override)
    if config["stage"] not in (0, 1, 2, 3):
        raise ConfigError(f"stage must be 0 (video base), 1, 2 or 3, got {config['stage']!r}")
    _check_values(config)
    if len(config["train"]["betas"]) != 2:
        raise ConfigError(f"train.betas must be two numbers, got {config['train']['betas']!r}")
    for section, key in (("model", "pretrained"), ("data", "manifest")):
        if not config[section][key]:
            raise ConfigError(f"config {path}: {section}.{key} is required")
    return config
