"""Command line: text to a sounding video.

    python -m javis_core.generate --prompt "a dog barks at a passing train" --out clip.mp4
    python -m javis_core.generate --prompts JavisBench.csv --out-dir samples/   # numbered, resumable, multi-GPU
    python -m javis_core.generate --prompt "footsteps on gravel" --video-in walk.mp4 --out walk_with_sound.mp4
    python -m javis_core.generate --prompt "a drummer" --audio-in drums.wav --out drummer.mp4
    python -m javis_core.generate --prompt "waves" --image-in beach.png --extend-to 8 --out waves.mp4

Weights come from the hub ids by default (JavisVerse/JavisDiT-v1.0-jav, Wan-AI/Wan2.1-T2V-1.3B, cvssp/audioldm2);
``--model``, ``--wan`` and ``--audioldm2`` take local directories instead. ``--model`` also takes a complete
pipeline directory (``model_index.json``), e.g. one written by ``python -m javis_core.tiny``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from .pipelines.requests import CLI_NAMES, MODES, check_request, has_video, resolve_size
from .loaders.hub import add_loading_arguments
from .pipelines.sizes import ASPECT_PRESETS, ASPECT_RATIOS, FPS, RESOLUTIONS, SAMPLE_RATE
from .pipelines.speed import PRESETS, resolve_attention_backend

DEFAULT_STEPS = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m javis_core.generate", description=__doc__.splitlines()[0])
    what = parser.add_argument_group("what to generate")
    source = what.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text prompt")
    source.add_argument("--prompts", type=Path, help="a .txt (one prompt per line) or .csv (column 'text') file")
    what.add_argument("--negative-prompt", default=None, help="default: the official negative prompt")
    what.add_argument("--mode", choices=MODES, default="t2av",
                      help="audio+video, audio only (writes .wav) or video only")  # fmt: skip
    length = what.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, default=None, help="seconds, 2-5 (default 4; 2 with --model demo)")
    length.add_argument("--num-frames", type=int, default=None, help="4k+1 frames at 16 fps, e.g. 33/49/65/81")
    what.add_argument("--resolution", choices=RESOLUTIONS, default="240p")
    what.add_argument("--aspect-ratio", default="9:16",
                      help=f"H:W ratio ({', '.join(ASPECT_RATIOS)}) or {', '.join(ASPECT_PRESETS)}; "
                      "'9:16' is landscape")  # fmt: skip

    given = parser.add_argument_group("conditioning on your media (see README, 'Conditioned generation')")
    media = given.add_mutually_exclusive_group()
    media.add_argument("--video-in", type=Path, default=None,
                       help="keep this video's picture and generate its sound (with --extend-to: continue this "
                       "clip, sound included)")  # fmt: skip
    media.add_argument("--image-in", type=Path, default=None, help="use this picture as the first frame")
    given.add_argument("--audio-in", type=Path, default=None, help="keep this sound and generate the picture")
    given.add_argument("--strength", type=float, default=0.0,
                       help="how much the given media may change: 0 = kept exactly (default), "
                       "1 = only a start")  # fmt: skip
    given.add_argument("--extend-to", type=float, default=None, metavar="SECONDS",
                       help="make a longer clip by chaining windows of --duration, each continuing "
                       "the last")  # fmt: skip

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=None,
                          help=f"default {DEFAULT_STEPS}; the demo model's own with --model demo")  # fmt: skip
    sampling.add_argument("--guidance", type=float, default=5.0, help="CFG scale (video, and audio by default)")
    sampling.add_argument("--audio-guidance", type=float, default=None, help="separate CFG scale for audio")
    sampling.add_argument("--shift", type=float, default=None, help="override the resolution/length shift")
    sampling.add_argument("--scheduler", choices=("euler", "unipc"), default=None, help="default: euler (official)")
    sampling.add_argument("--preset", choices=tuple(PRESETS), default=None,
                          help="exact: the official 50 Euler steps; fast / fastest: approximate, fewer UniPC steps "
                          "(fastest adds a step cache); --steps and --scheduler still override")  # fmt: skip
    sampling.add_argument("--seed", type=int, default=42)

    weights = parser.add_argument_group("weights and device")
    add_loading_arguments(weights)

    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=None, help="output file for --prompt (default clip.mp4)")
    output.add_argument("--out-dir", type=Path, default=None, help="output dir for --prompts (sample_0000.mp4 ...)")
    output.add_argument("--wav", action="store_true", help="also write the soundtrack as .wav")
    output.add_argument("--overwrite", action="store_true", help="regenerate files that already exist")
    return parser


def read_prompts(path: Path) -> list[str]:
    """Prompts from a .txt (one per line) or a .csv with a ``text`` column (the JavisBench format)."""
    if not path.exists():
        raise ValueError(f"--prompts: file {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "text" not in (reader.fieldnames or []):
                raise ValueError(f"--prompts: {path} has no 'text' column (columns: {reader.fieldnames})")
            prompts = [row["text"] for row in reader]
    else:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts: {path} holds no prompts")
    return prompts


def save_result(result, index: int, stem: Path, mode: str, wav: bool) -> list[Path]:
    from .media import write_video, write_wav

    written = []
    audio = None if result.audio is None else result.audio[index]
    if not has_video(mode):
        written.append(Path(write_wav(stem.with_suffix(".wav"), audio, SAMPLE_RATE)))
        return written
    frames = result.frames[index]
    written.append(Path(write_video(stem.with_suffix(".mp4"), frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)))
    if wav and audio is not None:
        written.append(Path(write_wav(stem.with_suffix(".wav"), audio, SAMPLE_RATE)))
    return written


def apply_model_defaults(args: argparse.Namespace) -> None:
    """Steps and length left unset: the demo model's own (what it was trained and evaluated on), else the usual."""
    from .demo.model import DEMO_DURATION, DEMO_NAME, DEMO_STEPS, demo_available

    if args.preset is not None:
        preset = PRESETS[args.preset]
        args.steps = preset.num_inference_steps if args.steps is None else args.steps
        args.scheduler = args.scheduler or preset.scheduler
    if args.model == DEMO_NAME or demo_available(args.model):
        args.steps = DEMO_STEPS if args.steps is None else args.steps
        if args.duration is None and args.num_frames is None:
            args.duration = DEMO_DURATION
    args.steps = DEFAULT_STEPS if args.steps is None else args.steps


def check_media(args: argparse.Namespace) -> dict:
    """Read the given media once before any weights load, so a bad file fails fast; the pipeline arguments."""
    from .media_inputs import MediaInput, read_audio_input, read_image_input, read_video_input

    named = {"--video-in": args.video_in, "--audio-in": args.audio_in, "--image-in": args.image_in}
    given = {flag: path for flag, path in named.items() if path is not None}
    if (args.video_in or args.audio_in) and args.mode != "t2av":
        raise ValueError(f"--video-in and --audio-in need --mode t2av (got {args.mode})")
    if args.image_in and args.mode == "t2a":
        raise ValueError("--image-in needs --mode t2av or t2v")
    if args.extend_to is not None and args.audio_in:
        raise ValueError("--extend-to continues a clip: give --video-in (a clip with sound), --image-in or neither")
    if not 0 <= args.strength <= 1:
        raise ValueError(f"--strength must be from 0 (kept exactly) to 1 (got {args.strength:g})")
    readers = {"--video-in": read_video_input, "--audio-in": read_audio_input, "--image-in": read_image_input}
    for flag, path in given.items():
        try:
            readers[flag](MediaInput(path), flag)
        except ValueError as error:
            raise ValueError(str(error)) from None
    media = {"video": args.video_in, "audio": args.audio_in, "image": args.image_in}
    media = {name: str(path) for name, path in media.items() if path is not None}
    if media or args.extend_to is not None:
        media.update(strength=args.strength, extend_to=args.extend_to)
    return media


def run(args: argparse.Namespace) -> list[Path]:
    from accelerate import PartialState

    from .pipelines.pipeline_javisdit import JavisDiTPipeline
    from .loaders.pipeline_loader import load_pipeline
    from .utils import best_device, parse_dtype

    apply_model_defaults(args)
    if args.prompt is not None:
        jobs = [(args.prompt, args.out or Path("clip.mp4"))]
        jobs = [(prompt, out.with_suffix("")) for prompt, out in jobs]
    else:
        out_dir = args.out_dir or Path("samples")
        jobs = [(p, out_dir / f"sample_{i:04d}") for i, p in enumerate(read_prompts(args.prompts))]
    # Fail fast on bad settings, before minutes of weight loading.
    for prompt, _ in jobs:
        check_request(prompt, args.mode, args.steps, args.guidance, args.audio_guidance, args.shift,
                      negative_prompt=args.negative_prompt, names=CLI_NAMES)  # fmt: skip
    resolve_size(args.resolution, args.aspect_ratio, None, None, args.duration, args.num_frames, names=CLI_NAMES)
    media = check_media(args)
    if args.dtype is not None:
        parse_dtype(args.dtype)
    if args.attention is not None:
        resolve_attention_backend(args.attention)
    suffix = ".mp4" if has_video(args.mode) else ".wav"
    state = PartialState()
    device = args.device or (str(state.device) if state.num_processes > 1 else best_device())
    pipe = load_pipeline(
        model=args.model, wan=args.wan, audioldm2=args.audioldm2, device=device, torch_dtype=args.dtype,
        offload=args.offload, vae_tiling=args.vae_tiling, compile=args.compile, attention_backend=args.attention,
        group_offload=args.group_offload, fp8_storage=args.fp8,
    )  # fmt: skip
    written: list[Path] = []
    with state.split_between_processes(list(enumerate(jobs))) as mine:
        for index, (prompt, stem) in mine:
            if stem.with_suffix(suffix).exists() and not args.overwrite:
                print(f"[{index}] exists, skipping: {stem.with_suffix(suffix)}")
                continue
            stem.parent.mkdir(parents=True, exist_ok=True)
            generator = torch.Generator("cpu").manual_seed(args.seed + index)
            result = pipe(
                prompt, negative_prompt=args.negative_prompt, mode=args.mode, resolution=args.resolution,
                aspect_ratio=args.aspect_ratio, duration=args.duration, num_frames=args.num_frames,
                num_inference_steps=args.steps, guidance_scale=args.guidance,
                audio_guidance_scale=args.audio_guidance, shift=args.shift, scheduler=args.scheduler,
                preset=args.preset, generator=generator, **media,
            )  # fmt: skip
            for note in result.report:
                print(f"[{index}] {note}")
            files = save_result(result, 0, stem, args.mode, args.wav)
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            settings.update(prompt=prompt, seed=args.seed + index)
            stem.with_suffix(".json").write_text(json.dumps(settings, indent=1, ensure_ascii=False))
            written += files
            print(f"[{index}] wrote {', '.join(map(str, files))}")
    return written


def main(argv: list[str] | None = None) -> int:
    from .loaders.checkpoints import CheckpointError
    from .loaders.hub import WeightsNotFoundError

    args = build_parser().parse_args(argv)
    try:
        run(args)
    except WeightsNotFoundError as error:
        print(f"error: {error}\n(--model demo runs offline, with the small demo model shipped in the package)",
              file=sys.stderr)  # fmt: skip
        return 2
    except (ValueError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped: the files written so far are kept; run the same command again to go on (finished samples "
              "are skipped)", file=sys.stderr)  # fmt: skip
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
