"""The sampling presets on the offline demo model: speed-up over ``exact`` and what the shortcut costs.

    python benchmarks/presets.py --captions 12

For each held-out caption (``demo_world.held_out_captions``, seed = caption index, 2 s 240p landscape, the demo's
evaluation request) every preset generates one clip. Reported per preset: median wall and CPU seconds per clip (text
encoding and denoising, one torch thread by default; the presets are interleaved caption by caption) and the
speed-up over ``exact`` in CPU time; the relative latent error against ``exact``'s latents from the same noise
(||z - z_exact|| / ||z_exact||, video and audio); caption match (object, colour, sound read back by
``demo_world.classify_clip``) and the synchrony metric (mean |offset| of matched audio onsets and visual events,
AV-Align), as ``benchmarks/demo_eval.py`` computes them. The demo model is small and its world simple: these figures
say nothing about the presets' quality on the released weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_eval import _clip_row, _uint8, summarize  # noqa: E402

from javis_core.demo import world as demo_world  # noqa: E402
from javis_core.codecs.audio import num_audio_samples  # noqa: E402
from javis_core.demo.model import DEMO_DIR, DEMO_DURATION, DEMO_SIZE  # noqa: E402
from javis_core.loaders.pipeline_loader import load_pipeline  # noqa: E402
from javis_core.pipelines.sizes import frames_for_duration  # noqa: E402
from javis_core.pipelines.speed import PRESETS  # noqa: E402


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def run(pipe, captions: list[dict], presets: list[str]) -> dict[str, dict]:
    num_frames = frames_for_duration(DEMO_DURATION)
    rows: dict[str, list[dict]] = {name: [] for name in presets}
    for index, item in enumerate(captions):
        latents = {}
        for name in presets:
            started, cpu_started = time.perf_counter(), time.process_time()
            out = pipe(item["caption"], preset=name, duration=DEMO_DURATION, output_type="latent",
                       generator=torch.Generator().manual_seed(index), **DEMO_SIZE)  # fmt: skip
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            latents[name] = (out.frames, out.audio)
            frames = pipe.decode_video(out.frames)[0].cpu().numpy()
            audio = pipe.decode_audio(out.audio, num_audio_samples(num_frames))[0].cpu().numpy()
            row = _clip_row(item, _uint8(frames), audio, seconds)
            exact = latents[presets[0]]
            row["cpu_seconds"] = cpu_seconds
            row["video_error"] = _relative_error(out.frames, exact[0])
            row["audio_error"] = _relative_error(out.audio, exact[1])
            rows[name].append(row)
        print(f"[{index}] " + ", ".join(f"{n} {rows[n][-1]['seconds']:.2f}s" for n in presets), flush=True)
    results = {}
    for name in presets:
        summary = summarize(rows[name])
        summary["seconds_per_clip"] = float(np.median([r["seconds"] for r in rows[name]]))
        summary["cpu_seconds_per_clip"] = float(np.median([r["cpu_seconds"] for r in rows[name]]))
        summary["video_error"] = float(np.mean([r["video_error"] for r in rows[name]]))
        summary["audio_error"] = float(np.mean([r["audio_error"] for r in rows[name]]))
        results[name] = {"summary": summary, "clips": rows[name]}
    return results


def table(results: dict[str, dict]) -> str:
    exact = results[next(iter(results))]["summary"]
    lines = ["| preset | settings | wall s/clip | CPU s/clip | speed-up (CPU time) | latent error video / audio "
             "| kind | colour | sound | all | mean abs offset (ms) | AV-Align |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, result in results.items():
        s = result["summary"]
        offset = "-" if s["mean_abs_offset_ms"] is None else f"{s['mean_abs_offset_ms']:.0f}"
        lines.append(
            f"| {name} | {PRESETS[name].description} | {s['seconds_per_clip']:.2f} | {s['cpu_seconds_per_clip']:.2f} | "
            f"{exact['cpu_seconds_per_clip'] / s['cpu_seconds_per_clip']:.1f}x | "
            f"{s['video_error']:.3f} / {s['audio_error']:.3f} | "
            f"{s['acc_kind']:.0%} | {s['acc_colour']:.0%} | {s['acc_sound']:.0%} | {s['acc_all']:.0%} | "
            f"{offset} | {s['av_align']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_DIR, help="demo model dir")
    parser.add_argument("--captions", type=int, default=12, help="held-out captions (50 in demo_eval)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), help="the first is the reference")
    parser.add_argument("--json", type=Path, default=None, help="write every clip's figures here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: the CPU time per clip is a fair measure on a busy machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe("warm-up", preset=args.presets[-1], duration=DEMO_DURATION, output_type="latent", **DEMO_SIZE)
    results = run(pipe, demo_world.held_out_captions(args.captions), args.presets)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
