"""The three training stages through the user's entry point (training/train.py) on synthetic data, CPU, tiny models.

Checks: each stage runs end to end and writes outputs the pipeline loads; a tiny model overfits one batch;
resuming continues with the same losses; only the intended parameters change; the AV-DPO loss and the pair
ranking equal hand computations; bad manifest rows are reported with their row and reason and left out.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from javis_core.loaders.checkpoints import load_transformer
from javis_core.training.data import BucketTable, read_manifest
from javis_core.training.dpo import av_dpo_loss
from javis_core.training import runner as train
from javis_core.training.preference import RankingOptions, rank_pairs
from javis_core.training.stages import LORA_TARGETS, is_audio_module_parameter
from javis_core.training.synthetic import make_synthetic_dataset, save_tiny_models

from .conftest import REPO

CONFIGS = REPO / "training" / "configs"
TARGET_WEIGHT = re.compile(r"^blocks\.\d+\.(" + "|".join(re.escape(t) for t in LORA_TARGETS) + r")\.weight$")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_synthetic_dataset(root / "data", num_clips=6, num_frames=17, height=32, width=48, seed=0)
    save_tiny_models(root / "models", seed=0)
    for name in ("audio", "av", "dpo"):  # one batch (the tiny buckets hold 2 clips) for the overfit runs
        lines = (root / "data" / f"{name}.csv").read_text().splitlines()
        (root / "data" / f"{name}_one_batch.csv").write_text("\n".join(lines[:3]) + "\n")
    return root


def run_stage(world: Path, stage: int, out: str, manifest: str, *overrides: str) -> Path:
    output_dir = world / out
    args = [
        "--config", str(CONFIGS / f"tiny_stage{stage}.yaml"),
        f"output_dir={output_dir}",
        f"model.pretrained={world / 'models' / 'wan'}",
        f"model.wan={world / 'models' / 'wan'}",
        f"model.audioldm2={world / 'models' / 'audioldm2'}",
        f"model.audio_weights={world / 'stage1' / 'transformer'}",
        f"model.adapter={world / 'stage2' / 'lora'}",
        f"data.manifest={world / 'data' / manifest}",
        "train.checkpoint_every=1000",
        *overrides,
    ]  # fmt: skip
    if stage == 1:
        args = [a for a in args if not a.startswith(("model.audio_weights", "model.adapter"))]
    if stage == 2:
        args = [a for a in args if not a.startswith("model.adapter")]
    assert train.main(args) == 0
    return output_dir


def losses(output_dir: Path, column: str = "loss") -> list[float]:
    with (output_dir / "logs" / "metrics.csv").open() as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


def changed_keys(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {key for key in before if not torch.equal(before[key].float(), after[key].float())}


OVERFIT = ("train.fixed_noise=true", "train.cfg_dropout=0", "train.ema_decay=0")


@pytest.fixture(scope="module")
def stage1(world):
    return run_stage(world, 1, "stage1", "audio_one_batch.csv", "train.max_steps=60", *OVERFIT)


@pytest.fixture(scope="module")
def stage2(world, stage1):
    return run_stage(world, 2, "stage2", "av_one_batch.csv", "train.max_steps=100", "train.lr=1e-2", *OVERFIT)


def test_stage1_overfits_and_trains_only_audio_modules(world, stage1):
    history = losses(stage1)
    assert len(history) == 60
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last <= 0.5 * first, (first, last)  # measured: 1.19 -> 0.50

    before = load_transformer(world / "models" / "wan" / "transformer", model_type="t2a").state_dict()
    after = load_transformer(stage1 / "transformer").state_dict()
    changed = changed_keys(before, after)
    assert changed and all(is_audio_module_parameter(key) for key in changed)
    assert any(".audio_ffn." in key for key in changed) and "audio_proj_out.weight" in changed


def test_stage2_overfits_and_trains_only_the_lora_targets(world, stage1, stage2):
    history = losses(stage2)
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    video = losses(stage2, "loss_video")
    # measured: total 2.38 -> 1.37 (the frozen heads limit the audio term), video term 1.2 -> 0.56
    assert last <= 0.6 * first, (first, last)
    assert np.mean(video[-3:]) <= 0.5 * np.mean(video[:3])

    from javis_core.training.stages import load_av_base

    before = load_av_base(world / "models" / "wan" / "transformer", stage1 / "transformer").state_dict()
    merged = load_transformer(stage2 / "transformer").state_dict()
    changed = changed_keys(before, merged)
    assert changed and all(TARGET_WEIGHT.match(key) for key in changed)
    assert (stage2 / "lora").is_dir()


def test_stage3_dpo_continues_the_adapter(world, stage1, stage2):
    out = run_stage(world, 3, "stage3", "dpo.csv", "train.max_steps=6")
    with (out / "logs" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    for column in ("dpo_loss_video", "dpo_loss_audio", "implicit_acc_video", "implicit_acc_audio"):
        assert all(math.isfinite(float(row[column])) for row in rows)
    stage2_weights = load_transformer(stage2 / "transformer").state_dict()
    stage3_weights = load_transformer(out / "transformer").state_dict()
    changed = changed_keys(stage2_weights, stage3_weights)
    assert changed and all(TARGET_WEIGHT.match(key) for key in changed)

    from javis_core.loaders.pipeline_loader import load_pipeline

    pipe = load_pipeline(out / "transformer", wan=world / "models" / "wan", audioldm2=world / "models" / "audioldm2")
    clip = pipe("a red square bounces", height=32, width=48, num_frames=9, num_inference_steps=2)
    assert clip.frames.shape == (1, 9, 32, 48, 3) and clip.audio.shape == (1, 9000)


def test_resume_continues_with_the_same_losses(world, stage1):
    common = ("train.max_steps=8", "train.checkpoint_every=4", "train.ema_decay=0.9")
    whole = run_stage(world, 2, "resume_whole", "av.csv", *common)
    part = run_stage(world, 2, "resume_part", "av.csv", *common[1:], "train.max_steps=4")
    assert len(losses(part)) == 4
    run_stage(world, 2, "resume_part", "av.csv", *common, "train.resume_from=latest")
    assert losses(part) == pytest.approx(losses(whole), abs=1e-6)
    assert len(losses(whole)) == 8


def test_lr_schedule_is_official_constant_by_default_and_decays_when_asked():
    def lrs(**train_cfg) -> list[float]:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = train.make_lr_scheduler(optimizer, {"warmup_steps": 4, "max_steps": 20, **train_cfg})
        values = []
        for _ in range(20):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values

    constant = lrs(lr_schedule="constant")
    assert constant[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and constant[-1] == 1.0
    cosine = lrs(lr_schedule="cosine")
    assert cosine[4] == 1.0 and all(a >= b for a, b in zip(cosine[4:], cosine[5:])) and cosine[-1] < 0.01
    with pytest.raises(ValueError, match="train.lr_schedule='cosin'"):
        lrs(lr_schedule="cosin")
    with pytest.raises(ValueError, match="train.max_steps"):
        lrs(lr_schedule="cosine", max_steps=None)


def test_av_dpo_loss_equals_hand_computation():
    policy_w = {"video": torch.tensor([0.10, 0.30]), "audio": torch.tensor([0.20, 0.05])}
    policy_l = {"video": torch.tensor([0.12, 0.25]), "audio": torch.tensor([0.21, 0.04])}
    ref_w = {"video": torch.tensor([0.11, 0.28]), "audio": torch.tensor([0.20, 0.06])}
    ref_l = {"video": torch.tensor([0.11, 0.26]), "audio": torch.tensor([0.20, 0.05])}
    loss, metrics = av_dpo_loss(policy_w, policy_l, ref_w, ref_l, beta={"audio": 1000.0, "video": 3000.0})

    def softplus(x):
        return math.log1p(math.exp(x))

    # dpo_k = -log sigmoid(-0.5 beta_k ((Lw - Ll) - (Rw - Rl))) = softplus(0.5 beta_k delta)
    delta_v = [(0.10 - 0.12) - (0.11 - 0.11), (0.30 - 0.25) - (0.28 - 0.26)]  # -0.02, 0.03
    delta_a = [(0.20 - 0.21) - (0.20 - 0.20), (0.05 - 0.04) - (0.06 - 0.05)]  # -0.01, 0.0
    dpo_v = [softplus(0.5 * 3000 * d) for d in delta_v]
    dpo_a = [softplus(0.5 * 1000 * d) for d in delta_a]
    per_pair = [dpo_v[i] + 0.1 * [0.10, 0.30][i] + dpo_a[i] + 0.1 * [0.20, 0.05][i] for i in range(2)]
    assert float(loss) == pytest.approx(sum(per_pair) / 2, rel=1e-5)
    assert metrics["dpo_loss_video"] == pytest.approx(sum(dpo_v) / 2, rel=1e-5)
    assert metrics["implicit_acc_video"] == 0.5 and metrics["implicit_acc_audio"] == 0.5
    assert metrics["policy_loss_audio"] == pytest.approx(0.125)


def _reward_row(prompt: str, candidate: str, vq, mq, tv, aq, ta, av, desync, height=240, width=426):
    return {
        "path": f"{prompt}/gt.mp4", "pred_video_path": candidate, "pred_audio_path": candidate.replace(".mp4", ".wav"),
        "text": prompt, "pred_num_frames": "65", "pred_height": str(height), "pred_width": str(width), "fps": "16",
        "visual_quality": vq, "motion_quality": mq, "ib_tv": tv, "audio_quality": aq, "ib_ta": ta, "ib_av": av,
        "desync_scores": desync,
    }  # fmt: skip


def test_pair_ranking_equals_hand_built_table():
    rows = [
        # prompt A: GT best on everything, s1 worst on everything, s2 in between
        _reward_row("A", "A/gt.mp4", 5, 5, 5, 5, 5, 5, 0.1),
        _reward_row("A", "A/s1.mp4", 1, 1, 1, 1, 1, 1, 0.9),
        _reward_row("A", "A/s2.mp4", 3, 3, 3, 3, 3, 3, 0.5),
        # prompt B: every candidate is better than another on one modality and worse on another
        _reward_row("B", "B/gt.mp4", 2, 2, 2, 2, 2, 2, 0.5),
        _reward_row("B", "B/s1.mp4", 4, 4, 4, 1, 1, 3, 0.3),
        _reward_row("B", "B/s2.mp4", 1, 1, 1, 4, 4, 1, 0.8),
    ]
    pairs = rank_pairs(rows)
    # A: of the dominating pairs (gt>s2, gt>s1, s2>s1) gt over s1 has the largest margin; B has none: dropped.
    assert [(p["path"], p["path_reject"]) for p in pairs] == [("A/gt.mp4", "A/s1.mp4")]
    assert pairs[0]["audio_path_reject"] == "A/s1.wav" and pairs[0]["num_frames"] == "65"

    without_gt = rank_pairs(rows, RankingOptions(include_gt=False))
    assert [(p["path"], p["path_reject"]) for p in without_gt] == [("A/s2.mp4", "A/s1.mp4")]

    macro = rank_pairs(rows, RankingOptions(mode="macro"))
    assert [(p["path"], p["path_reject"]) for p in macro] == [("A/gt.mp4", "A/s1.mp4")]

    # Desync is lower-is-better: making s1's sync perfect in B lets it dominate the GT on audio-video too,
    # but its audio is still worse, so B stays without a pair.
    rows[4] = dict(rows[4], desync_scores=0.0)
    assert len(rank_pairs(rows)) == 1

    portrait = [dict(r, pred_height="426", pred_width="240") for r in rows[:3]]
    assert rank_pairs(portrait) == []  # the official aspect filter keeps 0.5 < H/W < 0.6 only
    assert len(rank_pairs(portrait, RankingOptions(aspect_range=None))) == 1


def test_bad_manifest_rows_are_reported_and_skipped(world, tmp_path):
    good = (world / "data" / "av.csv").read_text().splitlines()
    header, rows = good[0], good[1:]
    broken = [
        header,
        rows[0],
        rows[1].replace("clips/0001.mp4", "clips/missing.mp4"),
        re.sub(r",17,32,48,16$", ",5,32,48,16", rows[2]),
        rows[3],
    ]
    manifest = world / "data" / "broken.csv"
    manifest.write_text("\n".join(broken) + "\n")
    buckets = BucketTable({"32x48": {9: [1.0, 2]}})
    kept, problems = read_manifest(manifest, "av", buckets)
    assert [row.index for row in kept] == [1, 4]
    reasons = {problem.row: str(problem) for problem in problems}
    assert set(reasons) == {2, 3}
    assert "path file not found" in reasons[2] and "missing.mp4" in reasons[2]
    assert "shorter than the smallest bucket" in reasons[3]

    wrong = tmp_path / "wrong.csv"
    wrong.write_text("video,caption\nclips/0000.mp4,hello\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\)"):
        read_manifest(wrong, "av", buckets)

    out = run_stage(world, 1 + 1, "broken_run", "broken.csv", "train.max_steps=2")  # trains on the good rows
    summary = (out / "summary.json").read_text()
    assert "row 2" in summary and "row 3" in summary


@pytest.mark.parametrize(("name", "kind"), [("ddp", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_accelerate_configs_are_valid(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "training" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.mixed_precision == "bf16"


def test_pre_extracted_cache_trains_like_the_videos(world, stage1):
    cache = world / "cache_av"
    out = run_stage(world, 2, "cached", "av.csv", "train.max_steps=3", f"data.cache_dir={cache}")
    assert any(cache.iterdir()) and len(losses(out)) == 3
    again = run_stage(world, 2, "cached_again", "av.csv", "train.max_steps=3", f"data.cache_dir={cache}")
    assert losses(again) == pytest.approx(losses(out), abs=1e-6)  # the second run reads the same cache


class _RecordingModel(torch.nn.Module):
    """Predicts zeros and keeps what it was given, to check how sft_step noises and weighs each modality."""

    def forward(self, hidden_states, timestep, audio_hidden_states, **kwargs):
        self.seen = {"video": hidden_states, "audio": audio_hidden_states, "timestep": timestep}
        zeros = torch.zeros_like
        return SimpleNamespace(sample=zeros(hidden_states), audio_sample=zeros(audio_hidden_states))


def test_clearer_picture_noises_the_video_less_and_trains_only_the_audio_there(world):
    from javis_core.training.objective import add_noise, clearer_picture, flow_matching_losses

    timesteps = torch.tensor([800.0, 500.0, 200.0])
    video_t, chosen = clearer_picture(timesteps, 1.0, 0.1)
    assert chosen.all() and torch.allclose(video_t, timesteps * 0.1)
    video_t, chosen = clearer_picture(timesteps, 0.0, 0.1)
    assert not chosen.any() and torch.equal(video_t, timesteps)
    half = clearer_picture(torch.full((4000,), 500.0), 0.3, 0.5, torch.Generator().manual_seed(0))[1]
    assert 0.27 < half.float().mean() < 0.33

    model = _RecordingModel()
    video, audio = torch.ones(3, 4, 2, 2, 2), torch.ones(3, 8, 4, 4)
    video_noise, audio_noise = torch.randn_like(video), torch.randn_like(audio)
    args = (video, audio, torch.zeros(3, 5, 8), torch.ones(3, 5), timesteps, video_noise, audio_noise, 5)
    flow_matching_losses(model, *args, video_timesteps=timesteps * 0.1)
    assert torch.allclose(model.seen["video"], add_noise(video, video_noise, timesteps * 0.1))
    assert torch.allclose(model.seen["audio"], add_noise(audio, audio_noise, timesteps))
    assert torch.equal(model.seen["timestep"], timesteps)  # the model is told the audio's level
    flow_matching_losses(model, *args, audio_timesteps=timesteps * 0.1)  # the mirror: a clearer sound
    assert torch.allclose(model.seen["audio"], add_noise(audio, audio_noise, timesteps * 0.1))
    assert torch.allclose(model.seen["video"], add_noise(video, video_noise, timesteps))

    config = train.load_config(CONFIGS / "tiny_stage2.yaml", [f"model.pretrained={world}", f"data.manifest={world}"])
    inputs = {"video": video, "audio": audio, "embeds": torch.zeros(3, 5, 8), "mask": torch.ones(3, 5)}
    negative = (torch.zeros(1, 5, 8), torch.ones(1, 5))
    config["train"]["cfg_dropout"] = 0.0
    _, metrics = train.sft_step(model, inputs, negative, (16, 16, 5), config, stage=2)
    assert metrics["loss_video"] > 0.5 and metrics["loss_audio"] > 0.5  # off by default: both modalities count
    config["train"]["audio_given_video"] = {"probability": 1.0, "video_noise_scale": 0.1}
    _, metrics = train.sft_step(model, inputs, negative, (16, 16, 5), config, stage=2)
    assert metrics["loss_video"] == 0.0 and metrics["loss_audio"] > 0.5
    level = model.seen["timestep"].view(-1, 1, 1, 1, 1) / 1000 * 0.1  # video noised to a tenth of the audio's level
    implied_noise = (model.seen["video"] - (1 - level) * video) / level
    assert 0.6 < implied_noise.std() < 1.5  # unit noise; at the audio's level this would be about 0.1

    with pytest.raises(ValueError, match=r"train.audio_given_video.probability must be in \[0.0, 1.0\], got 1.5"):
        train.load_config(CONFIGS / "tiny_stage2.yaml", [f"model.pretrained={world}", f"data.manifest={world}",
                                                          "train.audio_given_video.probability=1.5"])  # fmt: skip
    typo = r"unknown key train.audio_given_video.probabilty \(did you mean train.audio_given_video.probability\?\)"
    with pytest.raises(ValueError, match=typo):
        train.load_config(CONFIGS / "tiny_stage2.yaml", [f"model.pretrained={world}", f"data.manifest={world}",
                                                          "train.audio_given_video.probabilty=0.5"])  # fmt: skip
