"""Synthetic sounding videos for tests and smoke runs, in the same CSV + mp4/wav format as real data.

Each clip shows a coloured square bouncing between the left and right walls; every wall impact starts a short
decaying tone whose pitch depends on the colour, so sound and picture are synchronized and the text describes both.
Also writes the tiny random models a smoke run needs (:func:`save_tiny_models`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..media import write_video, write_wav
from ..pipelines.sizes import SAMPLE_RATE
from ..utils import write_csv

COLOURS = {"red": ((220, 40, 40), 440.0), "green": ((40, 200, 60), 660.0), "blue": ((50, 80, 230), 880.0),
           "yellow": ((230, 210, 40), 550.0)}  # fmt: skip
AV_COLUMNS = ("path", "audio_path", "text", "num_frames", "height", "width", "fps")
AUDIO_COLUMNS = ("path", "audio_path", "audio_text", "text", "num_frames", "height", "width", "fps")
DPO_COLUMNS = ("path", "audio_path", "path_reject", "audio_path_reject", "text", "num_frames", "height", "width", "fps")
AUDIO_ROW_FPS = 24  # stage-1 rows count duration in 24-fps frames (docs/official.md §8.2)


def bouncing_clip(
    rng: np.random.Generator, num_frames: int, height: int, width: int, fps: float = 16, delay_s: float = 0.0
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(frames uint8 (T, H, W, 3), audio float32 (N,), video caption, audio caption). ``delay_s`` desyncs the sound."""
    name = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    colour, pitch = COLOURS[name]
    size = max(4, min(height, width) // 4)
    speed = float(rng.uniform(0.25, 0.5)) * width / fps * 4  # pixels per second
    x, direction = float(rng.uniform(0, width - size)), 1.0
    y = int(rng.integers(0, height - size + 1))
    background = rng.integers(0, 60, size=3)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    impacts = []
    for index in range(num_frames):
        frames[index] = background
        frames[index, y : y + size, int(x) : int(x) + size] = colour
        x += direction * speed / fps
        if x <= 0 or x >= width - size:
            x = min(max(x, 0.0), width - size)
            direction = -direction
            impacts.append((index + 1) / fps)
    samples = int(round(num_frames / fps * SAMPLE_RATE))
    time = np.arange(samples) / SAMPLE_RATE
    audio = 0.01 * rng.standard_normal(samples)
    for impact in impacts:
        onset = time - impact - delay_s
        envelope = np.where(onset >= 0, np.exp(-np.clip(onset, 0, None) * 30), 0.0)
        audio += 0.6 * envelope * np.sin(2 * math.pi * pitch * onset)
    caption = f"a {name} square bounces between the walls of a dark room, a {pitch:.0f} Hz ping at each impact"
    audio_caption = f"short {pitch:.0f} Hz pings at irregular intervals over faint noise"
    return frames, np.clip(audio, -1, 1).astype(np.float32), caption, audio_caption


def make_synthetic_dataset(
    out_dir: str | Path, num_clips: int = 8, num_frames: int = 17, height: int = 32, width: int = 48,
    fps: float = 16, seed: int = 0,
) -> dict[str, Path]:  # fmt: skip
    """Write ``clips/*.mp4`` (video + AAC audio), ``audio/*.wav`` and three manifests: ``av.csv`` (stage 2),
    ``audio.csv`` (stage 1) and ``dpo.csv`` (stage 3: winner in sync, loser with its sound 0.25 s late)."""
    out_dir = Path(out_dir)
    for sub in ("clips", "audio", "rejects"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    av_rows, audio_rows, dpo_rows = [], [], []
    for index in range(num_clips):
        clip_seed = int(rng.integers(2**31))
        frames, audio, caption, audio_caption = bouncing_clip(np.random.default_rng(clip_seed), num_frames, height, width, fps)
        _, late_audio, _, _ = bouncing_clip(np.random.default_rng(clip_seed), num_frames, height, width, fps, delay_s=0.25)
        clip, wav, reject = f"clips/{index:04d}.mp4", f"audio/{index:04d}.wav", f"rejects/{index:04d}.mp4"
        write_video(out_dir / clip, frames, fps=fps, audio=audio, sample_rate=SAMPLE_RATE)
        write_wav(out_dir / wav, audio, sample_rate=SAMPLE_RATE)
        write_video(out_dir / reject, frames, fps=fps, audio=late_audio, sample_rate=SAMPLE_RATE)
        common = {"text": caption, "num_frames": num_frames, "height": height, "width": width, "fps": fps}
        av_rows.append({"path": clip, "audio_path": "", **common})
        duration_frames = int(num_frames / fps * AUDIO_ROW_FPS)
        audio_rows.append({"path": wav, "audio_path": wav, "audio_text": audio_caption, "text": caption,
                           "num_frames": duration_frames, "height": height, "width": width, "fps": AUDIO_ROW_FPS})  # fmt: skip
        dpo_rows.append({"path": clip, "audio_path": "", "path_reject": reject, "audio_path_reject": "", **common})
    return {
        "av": write_csv(out_dir / "av.csv", AV_COLUMNS, av_rows),
        "audio": write_csv(out_dir / "audio.csv", AUDIO_COLUMNS, audio_rows),
        "dpo": write_csv(out_dir / "dpo.csv", DPO_COLUMNS, dpo_rows),
    }


def tiny_wan_transformer(seed: int = 0):
    """A tiny diffusers ``WanTransformer3DModel`` (the layout of Wan2.1-T2V-1.3B-Diffusers) for stage-1 smoke runs."""
    from diffusers import WanTransformer3DModel

    from ..tiny import TEXT_DIM

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=16, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=96, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6,
    )  # fmt: skip


def save_tiny_models(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """``wan/`` (diffusers layout: transformer, text_encoder, tokenizer, vae) and ``audioldm2/`` (vae, vocoder)."""
    from ..codecs.audio import save_tiny_audioldm2
    from ..codecs.text import save_tiny_text_encoder
    from ..tiny import TEXT_DIM
    from ..codecs.video import save_tiny_wan_vae

    out_dir = Path(out_dir)
    wan = out_dir / "wan"
    tiny_wan_transformer(seed).save_pretrained(wan / "transformer")
    save_tiny_text_encoder(wan, dim=TEXT_DIM, seed=seed)
    save_tiny_wan_vae(wan, seed=seed)
    audioldm2 = save_tiny_audioldm2(out_dir / "audioldm2", seed=seed)
    return {"wan": wan, "audioldm2": Path(audioldm2)}
