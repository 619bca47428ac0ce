"""Video-to-audio and audio-to-video on the demo world, through the pipeline's ``video=`` / ``audio=`` inputs.

    python benchmarks/conditioned_eval.py --clips 50 --json outputs/demo/conditioned_eval.json

For each held-out caption (``demo_world.held_out_captions``) a ground-truth clip of the world is rendered at the
demo size. Video to audio: ``pipe(caption, video=picture)`` keeps that picture and generates the sound, whose onsets
are timed against the picture's known events. Audio to video: ``pipe(caption, audio=sound)`` keeps the sound and
generates the picture, whose visual events are timed against the sound's known events. Both against chance with
``sync_metric.against_chance``: each given clip against what was generated for every other clip of the same object,
with 95% bootstrap intervals (in sync beyond chance = a negative offset difference whose interval lies below zero).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_eval import _world_clip  # noqa: E402

from javis_core.demo import world as demo_world
from javis_core.evaluation import sync_metric  # noqa: E402
from javis_core.demo.model import DEMO_DIR, DEMO_SIZE, DEMO_STEPS  # noqa: E402
from javis_core.loaders.pipeline_loader import load_pipeline  # noqa: E402

FPS, SAMPLE_RATE = 16, 16000


def run(pipe, captions: list[dict], steps: int, given: str) -> dict:
    """``given`` = "video" (the sound is generated) or "audio" (the picture is generated)."""
    onsets, events, objects, seconds = [], [], [], []
    for index, item in enumerate(captions):
        scene, picture, sound = _world_clip(pipe, item, index)
        started = time.perf_counter()
        media = {"video": picture} if given == "video" else {"audio": sound}
        out = pipe(item["caption"], num_inference_steps=steps, num_frames=len(picture),
                   generator=torch.Generator().manual_seed(index), **media, **DEMO_SIZE)  # fmt: skip
        seconds.append(time.perf_counter() - started)
        if given == "video":
            onsets.append(sync_metric.clip_onsets(out.audio[0], SAMPLE_RATE, len(picture), FPS))
            events.append(list(scene.event_times))
        else:
            frames = (np.clip(out.frames[0], 0, 1) * 255).round().astype(np.uint8)
            onsets.append(list(scene.event_times))
            events.append(sync_metric.visual_events(frames, FPS))
        objects.append(item["kind"])
        print(json.dumps({"given": given, "clip": index, "object": item["kind"], "onsets_s": onsets[-1],
                          "events_s": events[-1], "seconds": round(seconds[-1], 1)}), flush=True)  # fmt: skip
    chance = sync_metric.against_chance(onsets, events, FPS, groups=objects)
    generated = events if given == "audio" else onsets
    return {"clips": len(captions), "against_chance": asdict(chance), "seconds_per_clip": float(np.median(seconds)),
            "generated_per_clip": float(np.mean([len(g) for g in generated]))}  # fmt: skip


def table(results: dict[str, dict]) -> str:
    head = ("| given | clips | mean abs offset (ms) | every other clip of the object (ms) | difference [95%] | "
            "AV-Align | every other clip | difference [95%] | generated events / clip |")  # fmt: skip
    lines = [head, "|---" * 9 + "|"]
    names = {"video": "picture -> sound (video to audio)", "audio": "sound -> picture (audio to video)"}
    for given, result in results.items():
        c = result["against_chance"]
        offsets = "n/a | n/a | n/a"
        if c["offset_difference_ms"] is not None:
            low, high = c["offset_interval_ms"]
            offsets = (f"{c['own_abs_offset_ms']:.0f} | {c['chance_abs_offset_ms']:.0f} | "
                       f"{c['offset_difference_ms']:+.0f} [{low:+.0f}, {high:+.0f}]")  # fmt: skip
        low, high = c["av_align_interval"]
        lines.append(f"| {names[given]} | {result['clips']} | {offsets} | {c['own_av_align']:.2f} | "
                     f"{c['chance_av_align']:.2f} | {c['av_align_difference']:+.2f} [{low:+.2f}, {high:+.2f}] | "
                     f"{result['generated_per_clip']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_DIR)
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--given", choices=("video", "audio", "both"), default="both")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    captions = demo_world.held_out_captions(args.clips)
    results = {}
    for given in ("video", "audio") if args.given == "both" else (args.given,):
        results[given] = run(pipe, captions, args.steps, given)
        print(json.dumps(results[given]), flush=True)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
