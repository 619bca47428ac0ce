"""Synthetic sounding videos (bouncing squares that ping on impact) plus tiny random models for smoke runs.

    python training/make_synthetic.py --out outputs/tiny            # data/ (mp4, wav, av/audio/dpo.csv) + models/
    python training/make_synthetic.py --out DIR --no-models --clips 64 --frames 33 --height 240 --width 432
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from javis_core.training.synthetic import make_synthetic_dataset, save_tiny_models  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=17, help="frames per clip at 16 fps")
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-models", action="store_true", help="skip the tiny random models")
    args = parser.parse_args(argv)
    manifests = make_synthetic_dataset(args.out / "data", args.clips, args.frames, args.height, args.width, seed=args.seed)
    for kind, path in manifests.items():
        print(f"{kind} manifest: {path}")
    if not args.no_models:
        for name, path in save_tiny_models(args.out / "models", seed=args.seed).items():
            print(f"tiny {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
