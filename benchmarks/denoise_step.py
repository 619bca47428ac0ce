"""Seconds per denoising step and peak memory of the JavisDiT++ transformer, joint vs video-only.

    python benchmarks/denoise_step.py --model tiny --resolution 240p --duration 4
    python benchmarks/denoise_step.py --model full --layers 2 --resolution 240p --duration 4 --device cpu
    python benchmarks/denoise_step.py --model full --device cuda --dtype bf16        # all 30 layers

A step is one batched forward over [prompt; negative prompt] (classifier-free guidance, batch 2 per video) with
random weights and inputs of the real shapes: video latents of the requested size, audio latents of the clip's
length, 512 text tokens. ``--model full`` is Wan2.1-1.3B width (1536, 12 heads, FFN 8960) with ``--layers``
blocks. The same weights are timed on the joint sequence (t2av) and on the video tokens alone (what Wan2.1 runs),
which gives the cost of the audio branch (the paper reports +1.6%).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from javis_core.codecs.audio import audio_latent_shape  # noqa: E402
from javis_core.pipelines.sizes import frames_for_duration, image_size  # noqa: E402
from javis_core.tiny import TEXT_DIM, tiny_transformer  # noqa: E402
from javis_core.models.transformer import JavisDiTTransformer3DModel  # noqa: E402
from javis_core.utils import parse_dtype  # noqa: E402
from javis_core.codecs.video import video_latent_shape  # noqa: E402


def build(model: str, layers: int, device: str, dtype: torch.dtype) -> JavisDiTTransformer3DModel:
    if model == "tiny":
        transformer = tiny_transformer()
    else:
        with torch.device("meta"):
            transformer = JavisDiTTransformer3DModel(num_layers=layers)
        transformer = transformer.to_empty(device=device)
        with torch.no_grad():
            for param in transformer.parameters():
                param.normal_(0, 0.02)
    transformer.to(device)
    if transformer.dtype != dtype:
        transformer.to(dtype)
    return transformer.eval()


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB GPU (allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS"


def time_steps(transformer, video, audio, text, num_frames: int, repeats: int, device: str) -> float:
    timestep = torch.full((text.shape[0],), 900.0, device=device)
    with torch.no_grad():
        transformer(video, timestep, text, audio_hidden_states=audio, num_frames=num_frames)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            transformer(video, timestep, text, audio_hidden_states=audio, num_frames=num_frames)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--layers", type=int, default=30, help="blocks of the full-width model")
    parser.add_argument("--resolution", default="240p")
    parser.add_argument("--aspect-ratio", default="9:16")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    dtype = parse_dtype(args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    height, width = image_size(args.resolution, args.aspect_ratio)
    num_frames = frames_for_duration(args.duration)
    transformer = build(args.model, args.layers, args.device, dtype)
    config = transformer.config
    batch = 2  # prompt + negative prompt
    video = torch.randn(batch, *video_latent_shape(num_frames, height, width, config.in_channels), device=args.device)
    audio = torch.randn(batch, *audio_latent_shape(num_frames), device=args.device)
    text_dim = TEXT_DIM if args.model == "tiny" else config.text_dim
    text = torch.randn(batch, 512, text_dim, device=args.device, dtype=dtype)
    params = sum(p.numel() for p in transformer.parameters())
    video_tokens = video[0, 0].numel() // 4
    audio_tokens = audio[0, 0].numel() // 4
    print(f"{args.model} model ({config.num_layers} layers, {params / 1e6:.1f} M params, {dtype}) on {args.device}; "
          f"{args.resolution} {args.aspect_ratio} {num_frames} frames ({height}x{width}): "
          f"{video_tokens} video + {audio_tokens} audio tokens, CFG batch {batch}")  # fmt: skip
    joint = time_steps(transformer, video, audio, text, num_frames, args.repeats, args.device)
    print(f"joint audio+video: {joint:.3f} s/step, peak {peak_memory(args.device)}")
    video_only = time_steps(transformer, video, None, text, num_frames, args.repeats, args.device)
    print(f"video only (Wan2.1 compute): {video_only:.3f} s/step")
    print(f"cost of the joint model over video-only: {100 * (joint / video_only - 1):+.1f}% "
          f"(tokens {100 * audio_tokens / video_tokens:+.1f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
