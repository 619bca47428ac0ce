"""Preference pairs for AV-DPO from per-sample reward scores (docs/official.md §8.5, official ``rank_dpo_pair``).

Input: one row per candidate (the ground truth plus the generated samples of each prompt), grouped by the
ground-truth ``path``; the candidate's files are ``pred_video_path``/``pred_audio_path`` (equal to the GT files
for the ground-truth row) and its attributes ``pred_num_frames``, ``pred_height``, ``pred_width`` (falling back
to the un-prefixed columns), plus the reward columns below.

Ranking (defaults = the official ones):
1. z-score every metric over the whole table (sample std), then negate ``desync_scores`` (lower is better);
2. modality scores: micro = mean of the normalised metrics; macro = mean of their ranks over the whole table;
3. per prompt, i beats j iff i is strictly better on the video, audio and audio-video scores; the dominating pair
   with the largest summed margin wins; prompts without one are dropped; the ground truth takes part;
4. the pair's lower-resolution member must have aspect ratio H/W in (0.5, 0.6); the pair is trained at the smaller
   size and the smaller frame count of the two.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import write_csv

REWARD_ASPECTS = {
    "video": ("visual_quality", "motion_quality", "ib_tv"),
    "audio": ("audio_quality", "ib_ta"),
    "audio_video": ("ib_av", "desync_scores"),
}
METRICS = tuple(metric for metrics in REWARD_ASPECTS.values() for metric in metrics)
LOWER_IS_BETTER = ("desync_scores",)
MODES = ("micro", "macro")
OUTPUT_COLUMNS = ("path", "audio_path", "path_reject", "audio_path_reject", "text", "num_frames", "height", "width",
                  "aspect_ratio", "resolution", "fps")  # fmt: skip


@dataclass(frozen=True)
class RankingOptions:
    normalize: bool = True  # z-score each metric over the table
    include_gt: bool = True  # the ground truth competes with the generated samples
    mode: str = "micro"  # "micro" (mean of metrics) or "macro" (mean of per-metric ranks)
    aspect_range: tuple[float, float] | None = (0.5, 0.6)  # None keeps every aspect ratio


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ascending, ties get their average rank (pandas' default)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def normalise(table: dict[str, np.ndarray], options: RankingOptions) -> dict[str, np.ndarray]:
    """z-score over the whole table (when enabled), lower-is-better metrics negated."""
    normalised = {}
    for metric in METRICS:
        values = table[metric].astype(float)
        if options.normalize:
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            if not np.isfinite(spread) or spread == 0:
                raise ValueError(f"reward column {metric!r} holds the same value ({values[0]:g}) in every row: it "
                                 "cannot rank candidates, so no DPO pair can be made; fill it with real scores")
            values = (values - values.mean()) / spread
        normalised[metric] = -values if metric in LOWER_IS_BETTER else values
    return normalised


def modality_scores(normalised: dict[str, np.ndarray], options: RankingOptions) -> np.ndarray:
    """(N, 3) video / audio / audio-video scores, higher is better (macro ranks are over the rows given)."""
    if options.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {options.mode!r}")
    columns = []
    for metrics in REWARD_ASPECTS.values():
        parts = [normalised[m] if options.mode == "micro" else _ranks(normalised[m]) for m in metrics]
        columns.append(np.mean(parts, axis=0))
    return np.stack(columns, axis=1)


def best_pair(scores: np.ndarray) -> tuple[int, int] | None:
    """(winner, loser) among rows that strictly dominate on every score, with the largest summed margin."""
    dominates = (scores[:, None, :] > scores[None, :, :]).all(axis=-1)
    pairs = np.argwhere(dominates)
    if len(pairs) == 0:
        return None
    margins = (scores[pairs[:, 0]] - scores[pairs[:, 1]]).sum(axis=1)
    winner, loser = pairs[int(margins.argmax())]
    return int(winner), int(loser)


def read_table(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        needed = ("path", "pred_video_path", "text") + METRICS
        missing = [column for column in needed if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"reward table {path} lacks the column(s) {missing}; found {reader.fieldnames}")
        return list(reader)


def _attribute(row: dict[str, str], name: str) -> str:
    return row.get(f"pred_{name}") or row.get(name) or ""


def rank_pairs(rows: list[dict[str, str]], options: RankingOptions = RankingOptions()) -> list[dict[str, str]]:
    """The DPO manifest rows (winner ``path``/``audio_path``, loser ``path_reject``/``audio_path_reject``)."""
    table = {metric: np.array([float(row[metric]) for row in rows]) for metric in METRICS}
    normalised = normalise(table, options)  # over the whole table, GT included, as the official code
    kept = [i for i, row in enumerate(rows) if options.include_gt or row["pred_video_path"] != row["path"]]
    scores = np.zeros((len(rows), len(REWARD_ASPECTS)))
    scores[kept] = modality_scores({m: v[kept] for m, v in normalised.items()}, options)
    groups: dict[str, list[int]] = {}
    for index in kept:
        groups.setdefault(rows[index]["path"], []).append(index)
    pairs = []
    for members in groups.values():
        found = best_pair(scores[members])
        if found is None:
            continue
        winner, loser = rows[members[found[0]]], rows[members[found[1]]]

        def pixels(row: dict[str, str]) -> float:
            return float(_attribute(row, "height")) * float(_attribute(row, "width"))

        smaller = winner if pixels(winner) < pixels(loser) else loser
        height, width = float(_attribute(smaller, "height")), float(_attribute(smaller, "width"))
        if options.aspect_range is not None and not options.aspect_range[0] < height / width < options.aspect_range[1]:
            continue
        shorter = winner if float(_attribute(winner, "num_frames")) < float(_attribute(loser, "num_frames")) else loser
        pairs.append({
            "path": winner["pred_video_path"],
            "audio_path": winner.get("pred_audio_path", ""),
            "path_reject": loser["pred_video_path"],
            "audio_path_reject": loser.get("pred_audio_path", ""),
            "text": winner["text"],
            "num_frames": _attribute(shorter, "num_frames"),
            "height": _attribute(smaller, "height"),
            "width": _attribute(smaller, "width"),
            "aspect_ratio": f"{height / width:.4g}",
            "resolution": f"{height * width:g}",
            "fps": _attribute(winner, "fps"),
        })  # fmt: skip
    return pairs


def write_pairs(pairs: list[dict[str, str]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(path, OUTPUT_COLUMNS, pairs)
