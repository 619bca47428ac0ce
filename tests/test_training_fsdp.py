"""FSDP training for real: two CPU processes (gloo) against one process doing the same optimizer steps.

One process with ``gradient_accumulation_steps=2`` sees the same two batches per step as two processes with one batch
each (``epoch_batches`` deals batches round-robin), and ``train.fixed_noise`` gives every batch the same draws, so the
saved weights must agree: to float rounding in fp32, and closely with the official dtypes (frozen bf16 base, fp32
trainable weights, bf16 autocast), where FSDP computes with bf16 copies of the trainable weights too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from javis_core.loaders.checkpoints import load_transformer
from javis_core.training import runner
from javis_core.training.synthetic import make_synthetic_dataset, save_tiny_models

from .conftest import REPO

MANIFESTS = {1: "audio.csv", 2: "av.csv", 3: "dpo.csv"}
# Adam's first step is lr * sign(gradient): a gradient that is zero up to rounding (summed in another order by two
# processes) would move its weight by +-lr either way. A larger eps lets such gradients move nothing.
ADAM_EPS = "train.eps=1e-4"
OFFICIAL_DTYPES = ("model.frozen_dtype=bf16", "train.mixed_precision=bf16")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    make_synthetic_dataset(root / "data", num_clips=8, num_frames=17, height=32, width=48, seed=0)
    save_tiny_models(root / "models", seed=0)
    return root


def stage_args(world: Path, stage: int, output_dir: Path, *overrides: str) -> list[str]:
    models = world / "models"
    args = ["--config", str(REPO / "training" / "configs" / f"tiny_stage{stage}.yaml"), f"output_dir={output_dir}",
            f"model.pretrained={models / 'wan'}", f"model.wan={models / 'wan'}",
            f"model.audioldm2={models / 'audioldm2'}", f"data.manifest={world / 'data' / MANIFESTS[stage]}",
            "train.max_steps=2", "train.checkpoint_every=1000", "train.fixed_noise=true", ADAM_EPS]  # fmt: skip
    if stage >= 2:
        args.append(f"model.audio_weights={world / 'inputs' / 'stage1' / 'transformer'}")
    if stage == 3:
        args.append(f"model.adapter={world / 'inputs' / 'stage2' / 'lora'}")
    return args + list(overrides)


def run_single(args: list[str]) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh process's state: mixed precision may differ
    assert runner.main(args) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_fsdp(args: list[str]) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "training" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
               "--main_process_port", str(free_port()), str(REPO / "tests" / "fsdp_on_cpu.py"), *args]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def inputs(world) -> Path:
    """Stage-1 and stage-2 outputs (one process) for the later stages to start from."""
    run_single(stage_args(world, 1, world / "inputs" / "stage1"))
    run_single(stage_args(world, 2, world / "inputs" / "stage2"))
    return world / "inputs"


def saved_tensors(output_dir: Path) -> dict[str, torch.Tensor]:
    files = {"ema": output_dir / "ema.safetensors",
             "transformer": output_dir / "transformer" / "diffusion_pytorch_model.safetensors",
             "lora": output_dir / "lora" / "adapter_model.safetensors"}  # fmt: skip
    return {f"{kind}/{key}": value for kind, path in files.items() if path.exists()
            for key, value in load_file(str(path)).items()}  # fmt: skip


@pytest.mark.parametrize(("stage", "dtypes"), [(1, OFFICIAL_DTYPES), (1, ()), (2, ()), (3, ())])
def test_two_fsdp_processes_save_what_one_process_does(world, inputs, stage, dtypes):
    single, sharded = world / f"single{stage}{len(dtypes)}", world / f"fsdp{stage}{len(dtypes)}"
    run_single(stage_args(world, stage, single, "train.gradient_accumulation_steps=2", *dtypes))
    run_fsdp(stage_args(world, stage, sharded, *dtypes))

    expected, got = saved_tensors(single), saved_tensors(sharded)
    assert got.keys() == expected.keys() and any(key.startswith("ema/") for key in got)
    for key, value in got.items():
        assert value.shape == expected[key].shape and value.dtype == expected[key].dtype and value.numel() > 0, key
    if dtypes:  # FSDP computes with bf16 copies of the trainable weights too: the weights' changes agree closely
        before = load_transformer(world / "models" / "wan" / "transformer", model_type="t2a").state_dict()
        keys = sorted(k for k in got if k.startswith("transformer/"))
        start = torch.cat([before[k.split("/", 1)[1]].to(got[k].dtype).float().flatten() for k in keys])
        moved_sharded = torch.cat([got[k].float().flatten() for k in keys]) - start
        moved_single = torch.cat([expected[k].float().flatten() for k in keys]) - start
        assert torch.cosine_similarity(moved_sharded, moved_single, dim=0) > 0.999  # measured 0.9998
        assert (moved_sharded - moved_single).norm() < 0.05 * moved_single.norm()  # measured 0.02
        for key in got:
            if key.startswith("ema/"):
                torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=0, msg=key)  # measured 4e-5
    else:
        for key in got:
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5,
                                       msg=lambda message, key=key: f"{key}: {message}")
