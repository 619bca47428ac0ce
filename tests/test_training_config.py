"""Training configs are checked before any data or model loads: unknown keys and bad values name the key."""

from __future__ import annotations

import pytest

from javis_core.training import runner
from javis_core.training.config import ConfigError, load_config

from .conftest import REPO

TINY = REPO / "training" / "configs" / "tiny_stage2.yaml"
# Paths that do not exist: a config error must come before anything tries to read them.
NOWHERE = ["model.pretrained=/nonexistent/wan", "data.manifest=/nonexistent/av.csv"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_stepz=3", r"unknown key train.max_stepz \(did you mean train.max_steps\?\)"),
        ("trian.max_steps=3", r"unknown key trian.max_steps \(did you mean train.max_steps\?\)"),
        ("model.lroa.rank=8", r"unknown key model.lroa.rank \(did you mean model.lora.rank\?\)"),
        ("dpo.betta=3", r"unknown key dpo.betta \(did you mean dpo.beta\?\)"),
        ("train.lr=abc", r"train.lr must be a number, got 'abc'"),
        ("train.max_steps=2.5", r"train.max_steps must be an integer, got 2.5"),
        ("train.fixed_noise=maybe", r"train.fixed_noise must be true or false, got 'maybe'"),
        ("train.log_with=wandb", r"train.log_with must be one of auto, tensorboard, csv, got 'wandb'"),
        ("train.cfg_dropout=1.5", r"train.cfg_dropout must be in \[0.0, 1.0\], got 1.5"),
        ("model.lora=8", r"model.lora takes the keys rank, alpha, dropout, got 8"),
    ],
)
def test_bad_overrides_are_errors_naming_the_key_before_anything_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [*NOWHERE, override])
    with pytest.raises(ConfigError, match=message):  # the runner stops there too, before the missing weights
        runner.main(["--config", str(TINY), *NOWHERE, override])


def test_unknown_yaml_keys_are_errors_naming_the_file_and_the_key(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(TINY.read_text() + "dpo:\n  betta: {audio: 1.0, video: 2.0}\n")
    with pytest.raises(ConfigError, match=rf"config {config}: unknown key dpo.betta \(did you mean dpo.beta\?\)"):
        load_config(config, NOWHERE)


def test_good_overrides_are_parsed_and_bucket_names_are_free():
    config = load_config(TINY, [*NOWHERE, "train.lr=3e-3", "train.max_steps=7", "data.buckets.64x96={9: [1.0, 2]}"])
    assert config["train"]["lr"] == 0.003 and config["train"]["max_steps"] == 7
    assert set(config["data"]["buckets"]) == {"32x48", "64x96"}


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage3", "tiny_stage1", "tiny_stage2", "tiny_stage3"])
def test_shipped_configs_pass_the_check(name):
    assert load_config(REPO / "training" / "configs" / f"{name}.yaml", NOWHERE)["stage"] in (1, 2, 3)
