"""Convert an official JavisDiT++ (or Wan2.1) checkpoint into our diffusers layout.

    python -m javis_core.convert --official DIR --out DIR [--dtype bf16] [--no-lora] [--model-type t2av]
    python -m javis_core.convert --official DIR --out ComfyUI/models/diffusion_models/javisdit.safetensors

The LoRA of a release dir (``DIR/lora``) is merged, so the output is a plain ``JavisDiTTransformer3DModel``
that ``from_pretrained`` (and the pipeline) loads directly; an ``--out`` ending in ``.safetensors`` writes one
file with the config in its metadata (``single_file.py``), for ComfyUI's ``diffusion_models/`` folder.
"""

from __future__ import annotations

import argparse
import sys

from .pipelines.requests import MODES
from .loaders.checkpoints import CheckpointError, load_transformer
from .loaders.single_file import save_single_file
from .utils import parse_dtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m javis_core.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="release dir (model/ + lora/), weight dir or weight file")
    parser.add_argument("--out", required=True, help="output dir for save_pretrained, or a .safetensors file")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: keep the checkpoint's)")
    parser.add_argument("--model-type", choices=MODES, default=None)
    parser.add_argument("--audio-pe-type", default="interleave_offset")
    parser.add_argument("--num-heads", type=int, default=None,
                        help="attention heads (default: hidden size / 128, Wan2.1's head width)")
    parser.add_argument("--no-lora", action="store_true", help="do not merge the LoRA adapter")
    parser.add_argument("--max-shard-size", default="5GB")
    args = parser.parse_args(argv)
    try:
        dtype = parse_dtype(args.dtype) if args.dtype else None
        model = load_transformer(
            args.official,
            model_type=args.model_type,
            torch_dtype=dtype,
            lora=False if args.no_lora else "auto",
            audio_pe_type=args.audio_pe_type,
            **({"num_attention_heads": args.num_heads} if args.num_heads else {}),
        )
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out.endswith(".safetensors"):
        save_single_file(model, args.out)
    else:
        model.save_pretrained(args.out, max_shard_size=args.max_shard_size)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {model.config.model_type}, {params:,} parameters, {next(model.parameters()).dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
