"""Evaluate the offline demo model on held-out captions: does the clip show and sound like its caption, in sync?

    python benchmarks/demo_eval.py                                   # the shipped model, 50 held-out captions
    python benchmarks/demo_eval.py --compare sft=outputs/demo/model_sft/transformer \\
        vanilla=outputs/demo/model_vanilla/transformer --json outputs/demo/eval.json

For each caption of ``demo_world.held_out_captions`` (strings never used in training) one 2 s 240p landscape clip
is generated (seed = caption index) and read back with ``demo_world.classify_clip`` (object kind, colour, sound;
chance 1/3, 1/4, 1/3) and ``sync_metric`` (mean audio-minus-picture offset of matched events, AV-Align). Also
reported: the wall time of each pipeline call (text encoding, sampling, decoding) on this machine, and the audio
onsets and visual events the metric finds per clip.

The last row of the table is the reference: the world's own clips for the same captions, encoded and decoded by the
demo codecs, read back the same way. It is what a perfect transformer would score, and its visual events per clip
(beside the world's true count) show how many events a clean picture has; many more in generated clips mean a
picture that flickers. A second table times each picture against the sound of every other clip of its object
(``sync_metric.against_chance``) with 95% bootstrap intervals: clips in sync beyond chance have an offset difference
whose interval lies below zero.

``--coupling N`` also asks whether the timing of one modality depends on the other: for N captions it holds the
audio noise and changes the video noise (and the other way round), and reports how far the audio onsets and the
visual events move (mean nearest distance between two draws, ms). A model whose sound follows its picture moves its
onsets when only the video noise changes; one that times its sound on its own keeps them.

``--given-picture N`` asks it more directly: for N captions a ground-truth clip of the world is rendered, the video
latents are held to it while the sound is generated, and the onsets are timed against the clip's known events (and
against another clip's events, the chance level). ``--given-sound N`` is its mirror image: the audio latents are
held to the world's sound while the picture is generated, and the picture's visual events are timed against the
sound's known events. ``--shift`` changes the sampling shift of every generation.
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

from javis_core.demo import world as demo_world  # noqa: E402
from javis_core.evaluation import sync_metric  # noqa: E402
from javis_core.codecs.audio import AudioCodec, mel_frames_for, num_audio_samples  # noqa: E402
from javis_core.loaders.checkpoints import load_transformer  # noqa: E402
from javis_core.demo.model import DEMO_DIR, DEMO_SIZE, DEMO_STEPS  # noqa: E402
from javis_core.loaders.pipeline_loader import load_pipeline  # noqa: E402
from javis_core.media import write_video  # noqa: E402
from javis_core.codecs.video import VideoCodec  # noqa: E402

CHANCE = {"kind": 1 / 3, "colour": 1 / 4, "sound": 1 / 3, "all": 1 / 36}
WORLD = "world, through the codecs"


def _uint8(frames: np.ndarray) -> np.ndarray:
    """Frames in [0, 1] as the uint8 frames a saved clip has."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _clip(out) -> tuple[np.ndarray, np.ndarray]:
    """The first clip of a pipeline output as uint8 frames (T, H, W, 3) and its waveform."""
    return _uint8(out.frames[0]), out.audio[0]


def _clip_row(item: dict, frames: np.ndarray, audio: np.ndarray, seconds: float) -> dict:
    """What one clip for ``item`` is read back as: kind, colour and sound right or not, and its timing."""
    found = demo_world.classify_clip(frames, audio)
    report = sync_metric.measure(frames, 16, audio, 16000)
    row = {
        "caption": item["caption"], "object": item["kind"], "seconds": seconds,
        "kind": found["kind"] == item["kind"], "colour": found["colour"] == item["colour"],
        "sound": found.get("sound") == demo_world.SOUNDS[item["kind"]],
        "offset_ms": report.mean_offset_ms, "abs_offset_ms": report.mean_abs_offset_ms, "av_align": report.av_align,
        "onsets_s": report.audio_onsets_s, "events_s": report.visual_events_s,
    }  # fmt: skip
    row["all"] = row["kind"] and row["colour"] and row["sound"]
    return row


def summarize(rows: list[dict]) -> dict:
    offsets = [r["abs_offset_ms"] for r in rows if r["abs_offset_ms"] is not None]
    signed = [r["offset_ms"] for r in rows if r["offset_ms"] is not None]
    summary = {f"acc_{key}": float(np.mean([r[key] for r in rows])) for key in ("kind", "colour", "sound", "all")}
    summary.update(
        mean_abs_offset_ms=float(np.mean(offsets)) if offsets else None,
        mean_offset_ms=float(np.mean(signed)) if signed else None,
        av_align=float(np.mean([r["av_align"] for r in rows])),
        clips_with_events=len(offsets),
        onsets_per_clip=float(np.mean([len(r["onsets_s"]) for r in rows])),
        events_per_clip=float(np.mean([len(r["events_s"]) for r in rows])),
        seconds_per_clip=float(np.median([r["seconds"] for r in rows[1:] or rows])),  # the first call warms up
    )
    summary["shuffled"] = shuffled_baseline(rows)
    summary["against_chance"] = against_every_other_clip(rows)
    return summary


def against_every_other_clip(rows: list[dict]) -> dict | None:
    """Each clip's picture against its own sound and against the sound of every other clip of its object, with 95%
    bootstrap intervals of the differences (``sync_metric.against_chance``); None when no object has two clips."""
    objects = [r["object"] for r in rows]
    if len(set(objects)) == len(objects):
        return None
    onsets, events = [r["onsets_s"] for r in rows], [r["events_s"] for r in rows]
    return asdict(sync_metric.against_chance(onsets, events, 16, groups=objects))


def evaluate(pipe, captions: list[dict], steps: int, save_dir: Path | None = None, shift: float | None = None) -> dict:
    rows = []
    for index, item in enumerate(captions):
        started = time.perf_counter()
        out = pipe(item["caption"], num_inference_steps=steps, duration=2, shift=shift,
                   generator=torch.Generator().manual_seed(index), **DEMO_SIZE)  # fmt: skip
        seconds = time.perf_counter() - started
        frames, audio = _clip(out)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            write_video(save_dir / f"{index:02d}.mp4", frames, fps=16, audio=audio)
        rows.append(_clip_row(item, frames, audio, seconds))
    return {"summary": summarize(rows), "clips": rows}


def _world_clip(pipe, item: dict, index: int) -> tuple[demo_world.Scene, np.ndarray, np.ndarray]:
    """A ground-truth clip of the world for ``item`` at the demo size (the scene drawn with seed ``index``)."""
    height, width, frames = pipe.resolve_size(DEMO_SIZE["resolution"], DEMO_SIZE["aspect_ratio"], None, None, 2, None)
    size = VideoCodec(pipe.vae).decoded_size(height, width)
    scene = demo_world.sample_scene(np.random.default_rng(index), frames / 16, item["kind"], item["colour"],
                                    item["caption"], exclude_held_out=False)  # fmt: skip
    picture, sound = demo_world.render(scene.kind, scene.colour, scene.event_times, frames, *size)
    return scene, picture, sound


def world_through_codecs(pipe, captions: list[dict]) -> dict:
    """The reference a transformer is measured against: for each caption a clip of the world itself, through the
    video and audio codecs (encoded and decoded, as a perfect transformer's output would be), read back like a
    generated clip. Its offsets show how well the metric can time this world's clips after the codecs; its visual
    events per clip, next to the world's true count, show how many events a clean picture has."""
    video, audio = VideoCodec(pipe.vae), AudioCodec(pipe.audio_vae, pipe.vocoder)
    rows, true_events = [], []
    for index, item in enumerate(captions):
        scene, picture, sound = _world_clip(pipe, item, index)
        latents = video.encode(torch.from_numpy(picture).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)
        audio_latents = audio.encode(torch.from_numpy(sound)[None], sample_posterior=False,
                                     num_mel_frames=mel_frames_for(len(picture)))  # fmt: skip
        # decoded by the pipeline's own decoders, as its generated clips are
        frames = _uint8(pipe.decode_video(latents)[0].numpy())
        decoded = pipe.decode_audio(audio_latents, num_audio_samples(len(picture)))[0].numpy()
        rows.append(_clip_row(item, frames, decoded, 0.0))
        true_events.append(len(scene.event_times))
    summary = summarize(rows)
    summary["true_events_per_clip"] = float(np.mean(true_events))
    return {"summary": summary, "clips": rows}


def _partner_step(count: int) -> int:
    """How many clips on the partner of a clip is: captions cycle through the kinds, so three on is the same kind of
    object and sound with unrelated timing (never the clip itself when there are more clips than kinds)."""
    return len(demo_world.KINDS) if count > len(demo_world.KINDS) else 1


def _timing_summary(pairs: list[tuple[list[float], list[float]]]) -> dict:
    """Mean absolute and signed offsets and AV-Align over (audio onsets, visual events) pairs of clips."""
    reports = [sync_metric.compare(onsets, events, 16) for onsets, events in pairs]
    offsets = [r.mean_abs_offset_ms for r in reports if r.mean_abs_offset_ms is not None]
    signed = [r.mean_offset_ms for r in reports if r.mean_offset_ms is not None]
    return {"mean_abs_offset_ms": float(np.mean(offsets)) if offsets else None,
            "mean_offset_ms": float(np.mean(signed)) if signed else None,
            "av_align": float(np.mean([r.av_align for r in reports])), "clips_with_events": len(offsets)}  # fmt: skip


def shuffled_baseline(rows: list[dict]) -> dict:
    """The metric's chance level: each clip's picture against the sound of another clip of the same kind."""
    step = _partner_step(len(rows))
    return _timing_summary([(rows[(i + step) % len(rows)]["onsets_s"], row["events_s"]) for i, row in enumerate(rows)])


def _moved_ms(first: list[float], second: list[float]) -> float | None:
    """Mean distance (ms) from each time of one draw to the nearest of the other, both ways."""
    if not first or not second:
        return None
    nearest = [min(abs(a - b) for b in second) for a in first] + [min(abs(a - b) for a in first) for b in second]
    return float(np.mean(nearest) * 1000)


def coupling(pipe, captions: list[dict], steps: int, draws: int = 3) -> dict:
    """How far onsets and visual events move when only the video noise, or only the audio noise, changes."""
    size = pipe.resolve_size(DEMO_SIZE["resolution"], DEMO_SIZE["aspect_ratio"], None, None, 2, None)
    video_shape, audio_shape = pipe.latent_shapes(*size)
    noise = lambda shape, seed: torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    moved = {key: [] for key in ("onsets_video_noise", "onsets_audio_noise", "events_video_noise",
                                 "events_audio_noise")}  # fmt: skip
    for index, item in enumerate(captions):
        base = 1000 * (index + 1)
        for changed in ("video", "audio"):
            timings = []
            for draw in range(draws):
                out = pipe(item["caption"], num_inference_steps=steps, duration=2, **DEMO_SIZE,
                           latents=noise(video_shape, base + (draw if changed == "video" else 0)),
                           audio_latents=noise(audio_shape, base + 500 + (draw if changed == "audio" else 0)))  # fmt: skip
                frames, audio = _clip(out)
                timings.append(sync_metric.measure(frames, 16, audio, 16000))
            for a, b in zip(timings, timings[1:]):
                for what, field in (("onsets", "audio_onsets_s"), ("events", "visual_events_s")):
                    value = _moved_ms(getattr(a, field), getattr(b, field))
                    if value is not None:
                        moved[f"{what}_{changed}_noise"].append(value)
    return {key: float(np.mean(values)) if values else None for key, values in moved.items()}


def _generate_holding(pipe, caption: str, held_input: str, clean: torch.Tensor, num_frames: int, steps: int,
                      seed: int, shift: float | None, noise_scale: float):  # fmt: skip
    """The demo-size output for ``caption`` with the latents named ``held_input`` ("latents" or "audio_latents")
    held to ``clean``: after every step they are replaced by ``clean`` noised to the next step's level (times
    ``noise_scale``), as in inpainting, so that only the other modality is generated."""
    height, width, frames = pipe.resolve_size(DEMO_SIZE["resolution"], DEMO_SIZE["aspect_ratio"], None, None, None,
                                              num_frames)  # fmt: skip
    sigmas = pipe.sampling_sigmas(steps, height, width, frames, shift) + [0.0]
    generator = torch.Generator().manual_seed(seed)

    def held(step: int) -> torch.Tensor:
        sigma = sigmas[step] * noise_scale
        return sigma * torch.randn(clean.shape, generator=generator) + (1 - sigma) * clean

    return pipe(caption, num_inference_steps=steps, num_frames=frames, shift=shift, generator=generator,
                callback_on_step_end=lambda p, step, t, kw: {held_input: held(step + 1)},
                callback_on_step_end_tensor_inputs=[held_input], **{held_input: held(0)}, **DEMO_SIZE)  # fmt: skip


def generate_for_picture(pipe, caption: str, picture: np.ndarray, steps: int, seed: int, shift: float | None = None,
                         picture_noise_scale: float = 1.0):  # fmt: skip
    """The demo-size output for ``caption`` with the video latents held to ``picture`` (uint8 (T, H, W, 3) at the
    decoded size, noised ``picture_noise_scale`` x the sound's level), so that only the sound is generated."""
    clean = VideoCodec(pipe.vae).encode(torch.from_numpy(picture).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)
    return _generate_holding(pipe, caption, "latents", clean, len(picture), steps, seed, shift, picture_noise_scale)


def generate_for_sound(pipe, caption: str, sound: np.ndarray, num_frames: int, steps: int, seed: int,
                       shift: float | None = None, sound_noise_scale: float = 1.0):  # fmt: skip
    """The mirror image of :func:`generate_for_picture`: the audio latents are held to ``sound`` (a 16 kHz
    waveform as long as ``num_frames`` at 16 fps) while the picture is generated."""
    clean = AudioCodec(pipe.audio_vae, pipe.vocoder).encode(torch.from_numpy(sound)[None])
    return _generate_holding(pipe, caption, "audio_latents", clean, num_frames, steps, seed, shift, sound_noise_scale)


def _own_and_another(rows: list[dict], pair, names: tuple[str, str]) -> dict:
    """Timing of each row against its own clip and against another clip's (the chance level): ``pair(row, other)``
    gives the (audio onsets, visual events) to compare."""
    partners = (0, _partner_step(len(rows)))
    return {name: _timing_summary([pair(row, rows[(i + partner) % len(rows)]) for i, row in enumerate(rows)])
            for name, partner in zip(names, partners)}  # fmt: skip


def _timed_against_the_world(pipe, captions: list[dict], generated_times, generated_is_audio: bool,
                             names: tuple[str, str], count_key: str) -> dict:  # fmt: skip
    """For each caption a clip of the world is rendered and ``generated_times(index, item, picture, sound)`` gives the
    times (audio onsets or visual events) of what the model made for it; they are timed against the clip's known
    events and against another clip's (the chance level)."""
    rows = []
    for index, item in enumerate(captions):
        scene, picture, sound = _world_clip(pipe, item, index)
        rows.append({"events_s": scene.event_times, "generated_s": generated_times(index, item, picture, sound)})

    def pair(row: dict, other: dict) -> tuple[list[float], list[float]]:  # (audio onsets, visual events)
        generated, true = row["generated_s"], other["events_s"]
        return (generated, true) if generated_is_audio else (true, generated)

    result = _own_and_another(rows, pair, names)
    result[count_key] = float(np.mean([len(r["generated_s"]) for r in rows]))
    result["events_per_clip"] = float(np.mean([len(r["events_s"]) for r in rows]))
    return result


def sound_for_picture(pipe, captions: list[dict], steps: int, shift: float | None = None,
                      picture_noise_scale: float = 1.0) -> dict:  # fmt: skip
    """Does the sound follow a given picture? The sound of each world clip's picture is generated
    (:func:`generate_for_picture`) and its onsets timed against the clip's events."""

    def onsets(index: int, item: dict, picture: np.ndarray, sound: np.ndarray) -> list[float]:
        out = generate_for_picture(pipe, item["caption"], picture, steps, index, shift, picture_noise_scale)
        return sync_metric.clip_onsets(out.audio[0], 16000, len(picture), 16)

    return _timed_against_the_world(pipe, captions, onsets, True, ("own_picture", "another_picture"),
                                    "onsets_per_clip")  # fmt: skip


def picture_for_sound(pipe, captions: list[dict], steps: int, shift: float | None = None,
                      sound_noise_scale: float = 1.0) -> dict:  # fmt: skip
    """Does the picture follow a given sound? The picture for each world clip's sound is generated
    (:func:`generate_for_sound`) and its visual events timed against the sound's events."""

    def events(index: int, item: dict, picture: np.ndarray, sound: np.ndarray) -> list[float]:
        out = generate_for_sound(pipe, item["caption"], sound, len(picture), steps, index, shift, sound_noise_scale)
        return sync_metric.visual_events(_clip(out)[0], 16)

    return _timed_against_the_world(pipe, captions, events, False, ("own_sound", "another_sound"),
                                    "visual_events_per_clip")  # fmt: skip


def table(results: dict[str, dict]) -> str:
    head = ("| clips | kind | colour | sound | all three | mean abs offset (ms) | mean offset (ms) | AV-Align | "
            "clips with events | onsets / clip | visual events / clip | s / clip |")  # fmt: skip
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731

    def timing(s: dict) -> str:
        return (f"{fmt(s['mean_abs_offset_ms'])} | {fmt(s['mean_offset_ms'])} | {s['av_align']:.2f} | "
                f"{s['clips_with_events']} |")  # fmt: skip

    for name, result in results.items():
        s, b = result["summary"], result["summary"]["shuffled"]
        seconds = f"{s['seconds_per_clip']:.1f}" if s["seconds_per_clip"] else ""
        lines.append(f"| {name} | {s['acc_kind']:.0%} | {s['acc_colour']:.0%} | {s['acc_sound']:.0%} | "
                     f"{s['acc_all']:.0%} | {timing(s)} {s['onsets_per_clip']:.1f} | {s['events_per_clip']:.1f} | "
                     f"{seconds} |")  # fmt: skip
        lines.append(f"| {name}, picture vs another clip's sound | | | | | {timing(b)} | | |")
    lines.append(f"| chance | {CHANCE['kind']:.0%} | {CHANCE['colour']:.0%} | {CHANCE['sound']:.0%} | "
                 f"{CHANCE['all']:.0%} | | | | | | | |")  # fmt: skip
    world = next((r["summary"] for r in results.values() if "true_events_per_clip" in r["summary"]), None)
    if world is not None:
        lines.append(f"\nThe world's clips have {world['true_events_per_clip']:.1f} events each.")
    return "\n".join(lines)


def chance_table(results: dict[str, dict]) -> str:
    """Own timing against the chance level of every other clip of the same object, with 95% intervals."""
    head = ("| clips | mean abs offset (ms) | every other clip's sound (ms) | difference [95%] | AV-Align | "
            "every other clip's sound | difference [95%] |")  # fmt: skip
    lines = [head, "|---" * 7 + "|"]
    for name, result in results.items():
        c = result["summary"].get("against_chance")
        if c is None:
            continue
        offsets = "n/a | n/a | n/a"
        if c["offset_difference_ms"] is not None:
            low, high = c["offset_interval_ms"]
            offsets = (f"{c['own_abs_offset_ms']:.0f} | {c['chance_abs_offset_ms']:.0f} | "
                       f"{c['offset_difference_ms']:+.0f} [{low:+.0f}, {high:+.0f}]")  # fmt: skip
        low, high = c["av_align_interval"]
        lines.append(f"| {name} | {offsets} | {c['own_av_align']:.2f} | {c['chance_av_align']:.2f} | "
                     f"{c['av_align_difference']:+.2f} [{low:+.2f}, {high:+.2f}] |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_DIR, help="demo model dir (codecs, tokenizer, transformer)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="NAME=TRANSFORMER_DIR",
                        help="other transformers to evaluate with the same codecs")
    parser.add_argument("--captions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--given-picture", type=int, default=0, metavar="N",
                        help="also generate the sound of N ground-truth pictures and time it against their events")
    parser.add_argument("--picture-noise-scale", type=float, default=1.0, metavar="S",
                        help="--given-picture holds the picture at S x the sound's noise level (training option "
                             "train.audio_given_video noises it to video_noise_scale x)")
    parser.add_argument("--given-sound", type=int, default=0, metavar="N",
                        help="also generate the picture of N ground-truth sounds and time its events against theirs")
    parser.add_argument("--sound-noise-scale", type=float, default=1.0, metavar="S",
                        help="--given-sound holds the sound at S x the picture's noise level")
    parser.add_argument("--shift", type=float, default=None, help="sampling shift (default: the pipeline's)")
    parser.add_argument("--save-dir", type=Path, default=None, help="write the generated clips here")
    parser.add_argument("--json", type=Path, default=None, help="write every clip's figures here")
    parser.add_argument("--coupling", type=int, default=0, metavar="N",
                        help="also measure, on N captions, whether each modality's timing follows the other's noise")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    captions = demo_world.held_out_captions(max(args.captions, args.given_picture, args.given_sound,
                                                args.coupling))
    models = {"demo": None, **dict(item.split("=", 1) for item in args.compare)}
    results = {}
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    for name, transformer in models.items():
        if transformer is not None:  # the text encoder and codecs stay: only the transformer differs
            pipe.transformer = load_transformer(transformer, torch_dtype=torch.float32)
        save = args.save_dir / name if args.save_dir else None
        results[name] = evaluate(pipe, captions[: args.captions], args.steps, save, args.shift)
        if args.given_picture:
            results[name]["given_picture"] = sound_for_picture(pipe, captions[: args.given_picture], args.steps,
                                                               args.shift, args.picture_noise_scale)  # fmt: skip
        if args.given_sound:
            results[name]["given_sound"] = picture_for_sound(pipe, captions[: args.given_sound], args.steps, args.shift,
                                                             args.sound_noise_scale)  # fmt: skip
        if args.coupling:
            results[name]["coupling"] = coupling(pipe, captions[: args.coupling], args.steps)
        print(f"{name}: {json.dumps(results[name]['summary'])}", flush=True)
    results[WORLD] = world_through_codecs(pipe, captions[: args.captions])
    print(table(results))
    print(chance_table(results))
    for name, result in results.items():
        if "given_picture" in result:
            print(f"{name} sound for a given picture: {json.dumps(result['given_picture'])}")
        if "given_sound" in result:
            print(f"{name} picture for a given sound: {json.dumps(result['given_sound'])}")
        if "coupling" in result:
            fmt = {key: None if v is None else round(v) for key, v in result["coupling"].items()}
            print(f"{name} coupling, ms moved when only this noise changes: {json.dumps(fmt)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
