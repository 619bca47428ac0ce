"""Finding weights: a local directory as given, else a Hugging Face Hub download (with progress bars).

When a download is impossible (offline, gated, no network) the error says which repository and files are
missing and how to supply them as a local directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download

JAVISDIT_REPO = "JavisVerse/JavisDiT-v1.0-jav"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
AUDIOLDM2_REPO = "cvssp/audioldm2"

# What each source contributes; only these files are downloaded.
JAVISDIT_FILES = ["model/*", "lora/*"]
WAN_FILES = ["Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/*"]
WAN_DIFFUSERS_FILES = ["text_encoder/*", "tokenizer/*", "vae/*"]
AUDIOLDM2_FILES = ["vae/*", "vocoder/*"]


class WeightsNotFoundError(RuntimeError):
    """Weights could not be found locally nor downloaded; the message tells the user what to do."""


def weights_present(name_or_path: str | os.PathLike, allow_patterns: list[str]) -> bool:
    """Whether weights are here without downloading: an existing local dir, or the hub repo in the local cache."""
    if Path(name_or_path).expanduser().exists():
        return True
    try:
        snapshot_download(str(name_or_path), allow_patterns=allow_patterns, local_files_only=True)
    except Exception:  # not cached (or not a repo id at all)
        return False
    return True


def resolve_weights(name_or_path: str | os.PathLike, allow_patterns: list[str], what: str, flag: str) -> Path:
    """A local dir (returned as is) or a hub repo id (downloaded to the HF cache, only ``allow_patterns``)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    repo = str(name_or_path)
    looks_like_repo = repo.count("/") == 1 and not repo.startswith((".", "/", "~"))
    if not looks_like_repo:
        raise WeightsNotFoundError(f"{what}: local path {path} does not exist (pass an existing dir to {flag})")
    try:
        return Path(snapshot_download(repo, allow_patterns=allow_patterns))
    except Exception as error:  # offline, DNS, 401/404 and cache misses all end here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsNotFoundError(
            f"{what}: could not download '{repo}' ({type(error).__name__}: {reason}).\n"
            f"On a machine with internet run:  hf download {repo} "
            f"{' '.join(f'--include {p!r}' for p in allow_patterns)} --local-dir /path/to/dir\n"
            f"then pass that directory with {flag} /path/to/dir."
        ) from error


def add_loading_arguments(parser) -> None:
    """The weight-location and placement flags shared by the CLI and the app (an argparse parser or group)."""
    parser.add_argument("--model", default=JAVISDIT_REPO, help="JavisDiT++ release dir/hub id, a pipeline dir, or 'demo' (the small offline model)")
    parser.add_argument("--wan", default=WAN_REPO, help="Wan2.1 dir/hub id (text encoder, tokenizer, video VAE)")
    parser.add_argument("--audioldm2", default=AUDIOLDM2_REPO, help="AudioLDM2 dir/hub id (audio VAE, vocoder)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--offload", action="store_true", help="model CPU offload (less GPU memory)")
    parser.add_argument("--vae-tiling", action="store_true", help="decode video in tiles (less memory)")
