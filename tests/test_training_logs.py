"""What a run writes about itself: the metrics CSV (each step's own rate, no duplicate rows after a resume), the
samples left out at read time in summary.json, and the reward tables that cannot rank."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState

from javis_core.training import runner
from javis_core.training.preference import METRICS, rank_pairs
from javis_core.training.synthetic import make_synthetic_dataset, save_tiny_models

from .conftest import REPO


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    make_synthetic_dataset(root / "data", num_clips=8, num_frames=17, height=32, width=48, seed=0)
    save_tiny_models(root / "models", seed=0)
    rows = (root / "data" / "audio.csv").read_text().splitlines()
    (root / "data" / "broken.wav").write_bytes(b"RIFF this is not a wave file" * 10)
    rows[2] = rows[2].replace("audio/0001.wav,audio/0001.wav", "broken.wav,broken.wav")
    (root / "data" / "audio_broken.csv").write_text("\n".join(rows) + "\n")
    return root


def run(world: Path, out: str, *overrides: str) -> Path:
    models = world / "models"
    AcceleratorState._reset_state(reset_partial_state=True)
    args = ["--config", str(REPO / "training" / "configs" / "tiny_stage1.yaml"), f"output_dir={world / out}",
            f"model.pretrained={models / 'wan'}", f"model.wan={models / 'wan'}",
            f"model.audioldm2={models / 'audioldm2'}", f"data.manifest={world / 'data' / 'audio_broken.csv'}",
            "train.lr=2e-3", "train.warmup_steps=2", "train.checkpoint_every=2", "train.log_with=auto",
            *overrides]  # fmt: skip
    assert runner.main(args) == 0
    return world / out


def metric_rows(out: Path) -> list[dict]:
    with (out / "logs" / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_run_logs_each_steps_rate_and_counts_unreadable_files(world):
    out = run(world, "run", "train.max_steps=3")
    rows = metric_rows(out)
    assert [int(row["step"]) for row in rows] == [1, 2, 3]
    assert list(out.glob("javisdit_train/events.out.tfevents.*")), "no TensorBoard events"  # log_with: auto
    # constant schedule after a linear warmup of 2: the steps use 1/3, 2/3 and 3/3 of the rate
    assert [float(row["lr"]) for row in rows] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_left_out"] == len(summary["skipped_rows"]) + len(summary["skipped_at_read_time"]) >= 1
    message = summary["skipped_at_read_time"][0]
    assert message.startswith("row 2: could not read") and "broken.wav" in message and "[Errno" not in message


def test_resuming_does_not_repeat_rows(world):
    out = run(world, "resumed", "train.max_steps=3")  # checkpoints at steps 2 and 3
    run(world, "resumed", "train.max_steps=4", f"train.resume_from={out / 'checkpoints' / 'step_0000002'}")
    assert [int(row["step"]) for row in metric_rows(out)] == [1, 2, 3, 4]


def test_a_constant_reward_column_is_an_error_naming_it():
    rows = [{"path": "gt.mp4", "pred_video_path": f"cand{i}.mp4", "text": "t", **{m: str(i + j) for j, m in
             enumerate(METRICS)}} for i in range(3)]  # fmt: skip
    for row in rows:
        row["ib_av"] = "0.5"
    with pytest.raises(ValueError, match="reward column 'ib_av' holds the same value .* in every row"):
        rank_pairs(rows)
