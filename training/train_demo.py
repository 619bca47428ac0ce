"""Train the offline demo model end to end on a CPU, with this project's own training stages.

    python training/train_demo.py --out outputs/demo            # about an hour on a 2-core CPU (model card)
    python training/train_demo.py --out outputs/demo --export   # ... and replace assets/demo_model

Steps: render the demo world (javis_core/demo/world.py) -> fit the PCA video/audio codecs -> stage 0 (a t2v video
base, standing in for Wan2.1) -> stage 1 (audio branch) -> stage 2 (audio-video LoRA SFT) -> generate candidates
with the stage-2 model for training captions and rank them by the synchrony metric and caption match -> stage 3
(AV-DPO on those pairs) -> export. Every stage is ``javis_core.training.runner`` with a config written to ``<out>/configs``.
``--ablation-vanilla`` also trains stage 2 with ``vanilla`` audio position ids (no TA-RoPE) for the comparison
in the model card. Timings of each step are written to ``<out>/timings.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from javis_core.demo import world as demo_world  # noqa: E402
from javis_core.evaluation import sync_metric  # noqa: E402
from javis_core.codecs.audio import AudioCodec  # noqa: E402
from javis_core.demo.codecs import GriffinLimVocoder, LinearMelVAE, LinearVideoVAE  # noqa: E402
from javis_core.demo.model import (  # noqa: E402
    DEMO_DIR,
    DEMO_STEPS,
    TEXT_MAX_LENGTH,
    demo_transformer_config,
    export_demo,
    write_encoder_dirs,
)
from javis_core.loaders.pipeline_loader import load_pipeline  # noqa: E402
from javis_core.media import read_video, write_video  # noqa: E402
from javis_core.training import runner as train_runner  # noqa: E402
from javis_core.training.objective import TRAIN_SHIFT_SCALE  # noqa: E402
from javis_core.models.transformer import JavisDiTTransformer3DModel  # noqa: E402
from javis_core.utils import write_csv  # noqa: E402


HEIGHT, WIDTH, FRAMES, FPS = 256, 448, 33, 16
BUCKETS = {f"{HEIGHT}x{WIDTH}": {FRAMES: [1.0, 4]}}
VIDEO_STRIDE, VIDEO_POOL = 32, 2  # 8 x 14 video latents (252 tokens a clip) from 2x-pooled 16-pixel PCA blocks
# Audio latents: one shared scale over the PCA channels (whitened ones gave each noise-floor texture channel the loss
# weight of the envelope), times 0.3, so that at any noise level the sound is less settled than the picture and
# reading the picture pays; stages 1-3 train at shift scale 1 (the sampler's) instead of 5 (most training at noise
# above 0.5). Together they made the audio loss depend more on the picture (benchmarks/picture_dependence.py; the
# model card has the figures).
AUDIO_SCALE, JOINT_SHIFT_SCALE = 0.3, 1.0
# Stage 2: 80% of the samples see their picture at a tenth of the sound's noise level and train only the sound
# (train.audio_given_video), at a constant lr. With matched noise only, the sound hardly read the picture in 1,000
# steps (audio loss +2.4% beside its own picture at noise 0.7); with these it learns to (model card).
STAGE2_TRAIN = {"lr_schedule": "constant", "audio_given_video": {"probability": 0.8, "video_noise_scale": 0.1}}


def stage_config(out: Path, stage: int, steps: int, lr: float, shift_scale: float = TRAIN_SHIFT_SCALE,
                 train: dict | None = None, **model) -> dict:  # fmt: skip
    manifest = out / ("data/dpo.csv" if stage == 3 else "data/manifest.csv")
    cache = {0: "cache_av", 1: "cache_audio", 2: "cache_av", 3: "cache_dpo"}[stage]
    return {
        "stage": stage, "seed": stage, "output_dir": str(out / f"stage{stage}"),
        "model": {"pretrained": str(out / "init"), "wan": str(out / "encoders/wan"),
                  "audioldm2": str(out / "encoders/audioldm2"), "frozen_dtype": "fp32", "encoder_dtype": "fp32",
                  "gradient_checkpointing": False, "lora": {"rank": 32, "alpha": 32, "dropout": 0.0}, **model},
        "data": {"manifest": str(manifest), "fps": FPS, "buckets": BUCKETS, "num_workers": 0,
                 "text_max_length": TEXT_MAX_LENGTH, "cache_dir": str(out / cache)},
        "train": {"epochs": 10_000, "max_steps": steps, "lr": lr, "warmup_steps": min(50, steps // 10),
                  "lr_schedule": "cosine", "shift_scale": shift_scale, "mixed_precision": "fp32", "ema_decay": 0,
                  "checkpoint_every": 10**9, "log_with": "csv", "log_every": 10, **(train or {})},
    }  # fmt: skip


def run_stage(out: Path, name: str, config: dict) -> None:
    path = out / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if train_runner.main(["--config", str(path)]) != 0:
        raise RuntimeError(f"{name} failed")


def fit_codecs(out: Path, manifest: Path, clips: int) -> None:
    rows = list(csv.DictReader(manifest.open()))[:clips]
    mel_front = AudioCodec(LinearMelVAE(), GriffinLimVocoder())
    mels = []

    def videos():  # each clip is decoded once: its mel is kept, its frames go to the PCA one clip at a time
        for row in rows:
            frames, audio, _ = read_video(manifest.parent / row["path"])
            mels.append(mel_front.waveform_to_mel(torch.from_numpy(audio)[None]))
            yield frames

    video_vae = LinearVideoVAE.fit(videos(), scale_factor_spatial=VIDEO_STRIDE, pixel_pool=VIDEO_POOL)
    write_encoder_dirs(out / "encoders", video_vae, LinearMelVAE.fit(mels, whiten=False, scaling_factor=AUDIO_SCALE))


def clip_reward(frames: np.ndarray, audio: np.ndarray, scene: dict) -> tuple[float, dict]:
    """Synchrony first (AV-Align minus |offset| / 1 s), plus the share of kind/colour/sound read back right."""
    report = sync_metric.measure(frames, FPS, audio, 16000)
    found = demo_world.classify_clip(frames, audio)
    match = np.mean([found["kind"] == scene["kind"], found["colour"] == scene["colour"],
                     found.get("sound") == demo_world.SOUNDS[scene["kind"]]])  # fmt: skip
    offset = abs(report.mean_offset_ms) if report.mean_offset_ms is not None else 1000.0
    return float(report.av_align - min(offset, 1000.0) / 1000.0 + match), {"av_align": report.av_align,
                                                                           "offset_ms": offset, "match": match}


def make_dpo_pairs(out: Path, model_dir: Path, captions: int, candidates: int) -> int:
    """Candidates of the SFT model (plus the ground truth) per training caption; best vs worst by reward."""
    data = out / "data"
    events = [json.loads(line) for line in (data / "events.jsonl").read_text().splitlines()]
    pipe = load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    seen, pairs, log = set(), [], []
    for scene in events:
        if scene["caption"] in seen or len(seen) >= captions:
            continue
        seen.add(scene["caption"])
        frames, audio, _ = read_video(data / scene["path"])
        scored = [(clip_reward(frames, audio, scene)[0], scene["path"])]
        for seed in range(candidates):
            result = pipe(scene["caption"], num_inference_steps=DEMO_STEPS, height=HEIGHT, width=WIDTH,
                          num_frames=FRAMES, generator=torch.Generator().manual_seed(seed))  # fmt: skip
            name = f"candidates/{Path(scene['path']).stem}_{seed}.mp4"
            (data / name).parent.mkdir(exist_ok=True)
            write_video(data / name, result.frames[0], fps=FPS, audio=result.audio[0])
            generated, sound, _ = read_video(data / name)
            reward, parts = clip_reward(generated, sound, scene)
            scored.append((reward, name))
            log.append({"caption": scene["caption"], "candidate": name, "reward": reward, **parts})
        best, worst = max(scored), min(scored[1:])
        if best[0] > worst[0]:
            pairs.append({"path": best[1], "path_reject": worst[1], "text": scene["caption"], "num_frames": FRAMES,
                          "height": HEIGHT, "width": WIDTH, "fps": FPS})  # fmt: skip
    if not pairs:
        raise RuntimeError(f"no preference pairs: no candidate of the {captions} captions scored below another")
    write_csv(data / "dpo.csv", list(pairs[0]), pairs)
    (data / "candidates.json").write_text(json.dumps(log, indent=1))
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--clips", type=int, default=1000, help="training clips to render")
    parser.add_argument("--steps", type=int, nargs=4, default=[3000, 800, 1100, 60], metavar=("S0", "S1", "S2", "S3"),
                        help="optimizer steps of stages 0-3 (batch 4)")
    parser.add_argument("--dpo-captions", type=int, default=16)
    parser.add_argument("--dpo-candidates", type=int, default=2)
    parser.add_argument("--ablation-vanilla", action="store_true", help="also train stage 2 with vanilla position ids")
    parser.add_argument("--export", action="store_true", help=f"write the result to {DEMO_DIR}")
    args = parser.parse_args(argv)
    out = args.out
    timings_file = out / "timings.json"  # a resumed run adds to the timings of the steps done before
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}

    def step(name: str, fn, *fn_args, **fn_kwargs):
        started = time.time()
        print(f"== {name}", flush=True)
        result = fn(*fn_args, **fn_kwargs)
        timings[name] = round(time.time() - started, 1)
        timings_file.write_text(json.dumps(timings, indent=2))
        print(f"== {name}: {timings[name]} s", flush=True)
        return result

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "data" / "manifest.csv"
    if not manifest.exists():
        step("render", demo_world.write_dataset, out / "data", args.clips, FRAMES, HEIGHT, WIDTH, FPS, seed=0,
             workers=os.cpu_count() or 1)
    if not (out / "encoders" / "audioldm2" / "vocoder").exists():
        step("codecs", fit_codecs, out, manifest, clips=200)
    if not (out / "init" / "config.json").exists():
        torch.manual_seed(0)
        JavisDiTTransformer3DModel(**demo_transformer_config()).save_pretrained(str(out / "init"))
    s0, s1, s2, s3 = args.steps
    base = {"pretrained": str(out / "stage0" / "transformer")}
    audio = {**base, "audio_weights": str(out / "stage1" / "transformer")}
    stages = [
        ("stage0", stage_config(out, 0, s0, 1e-3)),
        ("stage1", stage_config(out, 1, s1, 1e-3, JOINT_SHIFT_SCALE, **base)),
        ("stage2", stage_config(out, 2, s2, 1e-3, JOINT_SHIFT_SCALE, STAGE2_TRAIN, **audio)),
    ]
    if args.ablation_vanilla:
        vanilla = stage_config(out, 2, s2, 1e-3, JOINT_SHIFT_SCALE, STAGE2_TRAIN, **audio, audio_pe_type="vanilla")
        vanilla["output_dir"] = str(out / "stage2_vanilla")
        stages.append(("stage2_vanilla", vanilla))
    for name, config in stages:
        if not (Path(config["output_dir"]) / "summary.json").exists():
            step(name, run_stage, out, name, config)
    encoders = out / "encoders"
    for stage_dir, model_dir in (("stage2", "model_sft"), ("stage2_vanilla", "model_vanilla")):
        if (out / stage_dir / "transformer").exists() and not (out / model_dir / "transformer").exists():
            export_demo(out / stage_dir / "transformer", encoders, out / model_dir)
    if not (out / "data" / "dpo.csv").exists():
        count = step("dpo_pairs", make_dpo_pairs, out, out / "model_sft", args.dpo_captions, args.dpo_candidates)
        print(f"{count} preference pairs", flush=True)
    if not (out / "stage3" / "summary.json").exists():
        step("stage3", run_stage, out, "stage3", stage_config(out, 3, s3, 1e-4, JOINT_SHIFT_SCALE, **audio,
                                                              adapter=str(out / "stage2" / "lora")))  # fmt: skip
    if not (out / "model" / "transformer").exists():
        export_demo(out / "stage3" / "transformer", encoders, out / "model")
    if args.export:
        export_demo(out / "stage3" / "transformer", encoders, DEMO_DIR)
        print(f"exported to {DEMO_DIR}")
    print(json.dumps(timings, indent=2))
    print(f"total {sum(timings.values()):.0f} s, {sum(timings.values()) - timings.get('stage2_vanilla', 0):.0f} s "
          "without the ablation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
