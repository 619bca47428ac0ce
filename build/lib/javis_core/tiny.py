"""A tiny random JavisDiT++ pipeline for tests and smoke runs.

    python -m javis_core.tiny --out DIR

writes a complete pipeline directory (``model_index.json``, transformer, scheduler, umT5 text encoder and
tokenizer, Wan VAE, AudioLDM2 VAE and vocoder, all with tiny configs and random weights) that every entry point
(``JavisDiTPipeline.from_pretrained``, ``python -m javis_core.generate --model DIR``, the app, the ComfyUI
nodes) loads exactly like the real one. Its output is noise: it exercises the code, not the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .audio_codec import tiny_audio_codec_components
from .pipeline import JavisDiTPipeline
from .schedule import make_scheduler
from .text_encoder import tiny_text_encoder
from .transformer import JavisDiTTransformer3DModel
from .video_codec import tiny_video_vae

TEXT_DIM = 32


def tiny_transformer(seed: int = 0, model_type: str = "t2av") -> JavisDiTTransformer3DModel:
    """2 blocks, 2 heads of 24 dims (RoPE split 8/8/8), real latent channels and patch sizes."""
    torch.manual_seed(seed)
    model = JavisDiTTransformer3DModel(
        model_type=model_type, num_attention_heads=2, attention_head_dim=24, text_dim=TEXT_DIM, freq_dim=32,
        ffn_dim=96, num_layers=2,
    )  # fmt: skip
    with torch.no_grad():  # the official init zeroes the heads; random heads make outputs informative
        for head in (getattr(model, "proj_out", None), getattr(model, "audio_proj_out", None)):
            if head is not None:
                head.weight.normal_(0, 0.02)
    return model.eval()


def tiny_pipeline(seed: int = 0) -> JavisDiTPipeline:
    text = tiny_text_encoder(dim=TEXT_DIM, seed=seed)
    audio_vae, vocoder = tiny_audio_codec_components(seed=seed)
    return JavisDiTPipeline(
        transformer=tiny_transformer(seed),
        scheduler=make_scheduler("euler"),
        text_encoder=text.model,
        tokenizer=text.tokenizer,
        vae=tiny_video_vae(seed=seed),
        audio_vae=audio_vae,
        vocoder=vocoder,
    )


def save_tiny_pipeline(directory: str | Path, seed: int = 0) -> Path:
    directory = Path(directory)
    tiny_pipeline(seed).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m javis_core.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory to write the pipeline to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    save_tiny_pipeline(args.out, args.seed)
    print(f"wrote a tiny random JavisDiT++ pipeline to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
