"""Build the AV-DPO manifest from per-candidate reward scores (docs/official.md §8.5).

    python training/make_dpo_pairs.py --rewards rewards.csv --out data/stage3_dpo.csv
    python training/make_dpo_pairs.py --rewards rewards.csv --out ablation.csv --mode macro --no-normalize --exclude-gt

The rewards CSV has one row per candidate (ground truth + generated samples) with ``path`` (the ground-truth video,
grouping the candidates of a prompt), ``pred_video_path``/``pred_audio_path`` (the candidate), ``text``,
``pred_num_frames``/``pred_height``/``pred_width`` (or the un-prefixed columns) and the reward columns
visual_quality, motion_quality, ib_tv, audio_quality, ib_ta, ib_av, desync_scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from javis_core.training.preference import MODES, RankingOptions, rank_pairs, read_table, write_pairs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", required=True, type=Path, help="per-candidate reward table (CSV)")
    parser.add_argument("--out", required=True, type=Path, help="DPO manifest to write")
    parser.add_argument("--mode", choices=MODES, default="micro", help="micro: mean of metrics; macro: mean of ranks")
    parser.add_argument("--no-normalize", action="store_true", help="skip the z-score normalisation (ablation)")
    parser.add_argument("--exclude-gt", action="store_true", help="rank generated samples only (ablation)")
    parser.add_argument("--any-aspect", action="store_true", help="keep pairs of every aspect ratio")
    args = parser.parse_args(argv)
    options = RankingOptions(normalize=not args.no_normalize, include_gt=not args.exclude_gt, mode=args.mode,
                             aspect_range=None if args.any_aspect else (0.5, 0.6))  # fmt: skip
    try:
        rows = read_table(args.rewards)
        pairs = rank_pairs(rows, options)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_pairs(pairs, args.out)
    prompts = len({row["path"] for row in rows})
    print(f"wrote {len(pairs)} pairs from {prompts} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
