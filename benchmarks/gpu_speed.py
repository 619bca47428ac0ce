"""Speed and peak memory of each mode (preset / compile / low-VRAM) on random full-size weights.

    python benchmarks/gpu_speed.py                                   # one GPU: 30 layers, bf16, 240p/4 s and 480p/5 s
    python benchmarks/gpu_speed.py --model tiny --device cpu         # the same table for the tiny model on a CPU
    python benchmarks/gpu_speed.py --layers 2 --device cpu --sizes 240p:2 --modes exact fast

Nothing is downloaded: the transformer (Wan2.1-1.3B width, 30 blocks), Wan2.1's video VAE and AudioLDM2's VAE and
HiFi-GAN vocoder are built on the meta device, materialised on the target device with ``to_empty`` and filled with
``normal_(0, 0.02)``. Text embeddings are given (512 random umT5-sized tokens for prompt and negative prompt), so the
text encoder is not timed. For every size and mode the script prints seconds per denoising step (the sampling loop
divided by its steps), end-to-end seconds of a pipeline call (sampling and decoding to frames and waveform) and the
peak memory (GPU: ``max_memory_allocated``; CPU: the process's peak RSS so far). Last, the cost of the joint model
over video-only for one step (the paper reports +1.6%).

Modes: ``exact`` (official 50 Euler steps), ``exact+compile`` (the same with regional ``torch.compile``; the compile
run is excluded from the timing), ``fast`` and ``fastest`` (the approximate presets of ``javis_core.pipelines.speed``),
``low-vram`` (exact sampling with group offloading of every component, float8 transformer weights and VAE tiling).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, AutoencoderKLWan  # noqa: E402
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig  # noqa: E402

from javis_core.codecs.audio import tiny_audio_codec_components  # noqa: E402
from javis_core.loaders.pipeline_loader import configure_speed  # noqa: E402
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline  # noqa: E402
from javis_core.pipelines.schedule import make_scheduler  # noqa: E402
from javis_core.pipelines.speed import PRESETS  # noqa: E402
from javis_core.tiny import TEXT_DIM, tiny_transformer  # noqa: E402
from javis_core.models.transformer import JavisDiTTransformer3DModel  # noqa: E402
from javis_core.utils import parse_dtype  # noqa: E402
from javis_core.codecs.video import WAN_LATENTS_MEAN, WAN_LATENTS_STD, tiny_video_vae  # noqa: E402

MODES = ("exact", "exact+compile", "fast", "fastest", "low-vram")
SIZES = ("240p:4", "480p:5")


def _random(build, device: str) -> torch.nn.Module:
    """A module built on the meta device, materialised on ``device`` with N(0, 0.02) weights (no download)."""
    with torch.device("meta"):
        module = build()
    module = module.to_empty(device=device)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.02)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.normal_(0, 0.02)
    return module.eval()


def full_size_pipeline(layers: int, device: str, dtype: torch.dtype) -> JavisDiTPipeline:
    transformer = _random(lambda: JavisDiTTransformer3DModel(num_layers=layers), device).to(dtype)
    vae = _random(lambda: AutoencoderKLWan(latents_mean=WAN_LATENTS_MEAN, latents_std=WAN_LATENTS_STD), device)
    audio_vae = _random(lambda: AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2,
        sample_size=256, scaling_factor=0.4110932946205139,
    ), device)  # fmt: skip
    vocoder = _random(lambda: SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False,
    )), device)  # fmt: skip
    return JavisDiTPipeline(transformer=transformer, scheduler=make_scheduler("euler"), vae=vae,
                            audio_vae=audio_vae, vocoder=vocoder)  # fmt: skip


def tiny_size_pipeline(device: str) -> JavisDiTPipeline:
    audio_vae, vocoder = tiny_audio_codec_components()
    return JavisDiTPipeline(transformer=tiny_transformer(), scheduler=make_scheduler("euler"),
                            vae=tiny_video_vae(), audio_vae=audio_vae, vocoder=vocoder).to(device)  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def time_call(pipe: JavisDiTPipeline, request: dict, device: str) -> tuple[float, float, float]:
    """(s/step, end-to-end s, peak GiB) of one pipeline call; the step time is measured inside the loop."""
    marks: list[float] = []

    def on_step(pipe, step, timestep, kwargs):
        _sync(device)
        marks.append(time.perf_counter())
        return {}

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    pipe(**request, callback_on_step_end=on_step)
    _sync(device)
    total = time.perf_counter() - start
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else marks[0] - start
    return per_step, total, _peak_gib(device)


def joint_over_video(pipe: JavisDiTPipeline, request: dict, device: str, repeats: int = 2) -> float:
    """One t2av step's time over one video-only (t2v) step's, same weights and video size, CFG batch 2."""

    def step_time(mode: str) -> float:
        times = []
        for _ in range(repeats + 1):
            per_step, _, _ = time_call(pipe, request | {"mode": mode, "num_inference_steps": 3,
                                                        "output_type": "latent"}, device)  # fmt: skip
            times.append(per_step)
        return min(times[1:])

    return step_time("t2av") / step_time("t2v")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("full", "tiny"), default="full")
    parser.add_argument("--layers", type=int, default=30, help="blocks of the full-size transformer")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), help="RESOLUTION:SECONDS, e.g. 240p:4")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)

    device = args.device
    dtype = parse_dtype(args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    text_dim = TEXT_DIM if args.model == "tiny" else 4096
    embeds = torch.randn(1, 512, text_dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"{args.model} model ({args.layers if args.model == 'full' else 2} layers), {dtype}, on {where}; "
          f"torch {torch.__version__}")  # fmt: skip
    print("| size | mode | steps | s/step | end-to-end s | peak GiB |")
    print("|---|---|---|---|---|---|")
    ratio_request = None
    for size in args.sizes:
        resolution, seconds = size.split(":")
        base = dict(prompt_embeds=embeds, negative_prompt_embeds=embeds, resolution=resolution,
                    aspect_ratio="9:16", duration=float(seconds), generator=torch.Generator().manual_seed(0))  # fmt: skip
        ratio_request = ratio_request or base
        for mode in args.modes:
            pipe = full_size_pipeline(args.layers, device, dtype) if args.model == "full" else tiny_size_pipeline(device)
            pipe.set_progress_bar_config(disable=True)
            preset = "exact" if mode in ("exact+compile", "low-vram") else mode
            if mode == "exact+compile":
                configure_speed(pipe, device, compile=True)
                pipe(**base, preset=preset, num_inference_steps=2, output_type="latent")  # compiles
            if mode == "low-vram":
                pipe.vae.enable_tiling()
                configure_speed(pipe, device, group_offload=True, fp8_storage=True)
            per_step, total, peak = time_call(pipe, base | {"preset": preset}, device)
            steps = PRESETS[preset].num_inference_steps
            print(f"| {resolution}/{seconds} s | {mode} | {steps} | {per_step:.3f} | {total:.1f} | {peak:.2f} |",
                  flush=True)  # fmt: skip
            del pipe
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    pipe = full_size_pipeline(args.layers, device, dtype) if args.model == "full" else tiny_size_pipeline(device)
    pipe.set_progress_bar_config(disable=True)
    ratio = joint_over_video(pipe, ratio_request, device)
    print(f"joint / video-only step at {args.sizes[0]}: {ratio:.3f} ({100 * (ratio - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
