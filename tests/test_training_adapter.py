"""The stage-2/3 ``lora/`` output is a standard adapter: peft and diffusers load it with their defaults and give the
merged transformer's output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from javis_core.loaders.checkpoints import load_transformer
from javis_core.training.stages import POLICY_ADAPTER, load_adapter, load_av_base, lora_config, save_stage_outputs
from javis_core.training.synthetic import save_tiny_models


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny stage-2 model with a LoRA (rank 4, alpha 16: scale 4) of random weights, saved as the runner does."""
    root = tmp_path_factory.mktemp("adapter")
    wan = save_tiny_models(root / "models", seed=0)["wan"] / "transformer"
    load_av_base(wan).save_pretrained(root / "base")  # the audio branch is drawn once: every load is the same
    base = root / "base"
    model = load_transformer(base)
    model.add_adapter(lora_config(rank=4, alpha=16, dropout=0.0), adapter_name=POLICY_ADAPTER)
    generator = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    save_stage_outputs(model, 2, root / "out", merge=True)
    return base, root / "out"


def outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(1, 16, 3, 4, 6, generator=generator)
    audio = torch.randn(1, 8, 16, 16, generator=generator)
    text = torch.randn(1, 6, model.config.text_dim, generator=generator)
    with torch.no_grad():
        out = model(video, torch.tensor([500.0]), text, audio_hidden_states=audio)
    return out.sample, out.audio_sample


@pytest.fixture(scope="module")
def merged(trained) -> tuple[torch.Tensor, torch.Tensor]:
    return outputs(load_transformer(trained[1] / "transformer").eval())


def assert_same(got, expected):
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_lora_dir_loads_with_peft_defaults(trained, merged):
    base, out = trained
    model = PeftModel.from_pretrained(load_transformer(base), str(out / "lora"))
    assert_same(outputs(model.base_model.model.eval()), merged)


def test_lora_dir_loads_with_diffusers_defaults(trained, merged):
    base, out = trained
    model = load_transformer(base)
    model.load_lora_adapter(str(out / "lora"), prefix=None)
    assert_same(outputs(model.eval()), merged)


def test_stage3_reads_the_lora_dir_with_its_alpha(trained, merged):
    base, out = trained
    model = load_transformer(base)
    load_adapter(model, out / "lora", POLICY_ADAPTER)
    assert model.peft_config[POLICY_ADAPTER].lora_alpha == 16
    assert_same(outputs(model.eval()), merged)
    unchanged = outputs(load_transformer(base).eval())
    assert not torch.allclose(unchanged[0], merged[0], atol=1e-3)  # the adapter does change the output
