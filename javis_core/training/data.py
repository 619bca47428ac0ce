"""Training data: the official CSV manifests, validated row by row, read with the official transforms, bucketed.

Manifest kinds and their columns (docs/official.md §8, official data docs); relative paths are resolved against the CSV's folder:
* ``audio`` (stage 1): ``audio_path`` (or ``path``), ``audio_text`` or ``text``, ``num_frames`` (at ``fps``,
  default 24 for audio rows, i.e. the clip's duration), optional ``height``/``width`` of the dummy video;
* ``av`` (stage 2): ``path`` (mp4), ``text``, ``num_frames``, ``height``, ``width``, optional ``fps``, optional
  ``audio_path`` (otherwise the mp4's own audio track is used);
* ``dpo`` (stage 3): the ``av`` columns for the winner plus ``path_reject`` (and optional ``audio_path_reject``).

Transforms: frames resampled to 16 fps, consecutive frames from a random start, resize-to-fill (bilinear) and centre
crop to the bucket size rounded up to multiples of 16, values in [-1, 1]; audio 16 kHz mono, first trimmed/padded to
the video's duration, then the window that ends at the same relative position as the video crop (docs/official.md §3.3).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..media import _read_audio, probe, read_video
from ..pipelines.sizes import ASPECT_RATIOS, SAMPLE_RATE, image_size

logger = logging.getLogger(__name__)

KINDS = ("audio", "av", "dpo")
SIZE_MULTIPLE = 16  # the dataset rounds bucket H, W up to multiples of 16 (docs/official.md §3.1)
ELIGIBLE_PIXELS = 0.8  # a clip can go to a resolution if H*W >= 0.8 x its pixel budget (docs/official.md §8.3)
PIXEL_BUDGETS = {"144p": 36864, "240p": 102240, "360p": 230400, "480p": 409920}
# The 144p column of the aspect table (docs/official.md §6), used by the stage-1 audio buckets; the others come from sizes.py.
_SIZES_144P = {
    0.38: (117, 312), 0.43: (125, 291), 0.48: (133, 277), 0.50: (135, 270), 0.53: (139, 262), 0.54: (141, 260),
    0.56: (144, 256), 0.62: (151, 241), 0.67: (156, 234), 0.75: (166, 221), 1.00: (192, 192), 1.33: (221, 165),
    1.50: (235, 156), 1.78: (256, 144), 1.89: (263, 139), 2.00: (271, 135), 2.08: (277, 132),
}  # fmt: skip
_RATIO_NAMES = {key: name for name, key in ASPECT_RATIOS.items()}


class ManifestError(ValueError):
    """A manifest that cannot be used at all (missing file, wrong columns, no usable row)."""


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based data row (the CSV line is row + 1)
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (line {self.row + 1}): {self.reason}"


# ---------------------------------------------------------------------------------------------------- buckets
@dataclass(frozen=True)
class Bucket:
    resolution: str
    num_frames: int
    height: int  # rounded up to a multiple of 16
    width: int
    batch_size: int

    @property
    def key(self) -> str:
        return f"{self.resolution}/{self.num_frames}f/{self.height}x{self.width}"


def _round_up(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _closest_ratio(height: float, width: float) -> float:
    return min(ASPECT_RATIOS.values(), key=lambda key: abs(key - height / width))


def resolution_size(resolution: str, height: float | None, width: float | None) -> tuple[int, int] | None:
    """Bucket (H, W) for a clip: ``"240p"``-style names follow the aspect table, ``"64x96"`` is a fixed size."""
    if "x" in resolution:
        h, w = (int(part) for part in resolution.split("x"))
        return h, w
    key = _closest_ratio(height, width) if height and width else 0.56
    if resolution == "144p":
        return _SIZES_144P[key]
    return image_size(resolution, _RATIO_NAMES[key])


def _pixel_budget(resolution: str) -> int:
    if "x" in resolution:
        h, w = (int(part) for part in resolution.split("x"))
        return h * w
    if resolution not in PIXEL_BUDGETS:
        raise ValueError(f"bucket resolution must be one of {list(PIXEL_BUDGETS)} or 'HxW', got {resolution!r}")
    return PIXEL_BUDGETS[resolution]


@dataclass
class BucketTable:
    """``{resolution: {num_frames: [probability, batch_size]}}`` as in the official configs.

    ``probability`` is a float or ``[p_resolution, p_frames]``: a clip long enough for F frames goes to F with
    probability p_frames (largest F first) and stays at that resolution with probability p_resolution (else the
    next lower resolution is tried). Resolutions are tried from the largest pixel budget down.
    """

    spec: dict[str, dict[int, Any]]
    entries: list[tuple[str, int, float, float, int]] = field(init=False)

    def __post_init__(self) -> None:
        entries = []
        for resolution, frames in self.spec.items():
            _pixel_budget(resolution)
            for num_frames, value in frames.items():
                probability, batch_size = value
                p_res, p_frames = probability if isinstance(probability, (list, tuple)) else (probability, probability)
                entries.append((resolution, int(num_frames), float(p_res), float(p_frames), int(batch_size)))
        if not entries:
            raise ValueError("buckets must name at least one resolution and frame count")
        entries.sort(key=lambda e: (-_pixel_budget(e[0]), -e[1]))
        self.entries = entries

    @property
    def min_frames(self) -> int:
        return min(entry[1] for entry in self.entries)

    def _bucket(self, entry: tuple, height: float | None, width: float | None) -> Bucket:
        resolution, num_frames, _, _, batch_size = entry
        h, w = resolution_size(resolution, height, width)
        return Bucket(resolution, num_frames, _round_up(h), _round_up(w), batch_size)

    def _eligible(self, resolution: str, height: float | None, width: float | None) -> bool:
        return not (height and width) or height * width >= ELIGIBLE_PIXELS * _pixel_budget(resolution)

    def assign(
        self, height: float | None, width: float | None, num_frames: int, rng: random.Random | None = None
    ) -> Bucket | None:
        """Random bucket with the official probabilities; ``rng=None`` ignores them (largest that fits)."""
        resolutions = list(dict.fromkeys(entry[0] for entry in self.entries))
        for resolution in resolutions:
            if not self._eligible(resolution, height, width):
                continue
            for entry in (e for e in self.entries if e[0] == resolution):
                _, frames, p_res, p_frames, _ = entry
                if frames > num_frames or (rng is not None and rng.random() >= p_frames):
                    continue
                if rng is not None and rng.random() >= p_res:
                    break
                return self._bucket(entry, height, width)
        return None

    def for_pair(self, height: float | None, width: float | None, num_frames: int) -> Bucket | None:
        """DPO rows carry their bucket (smaller size and length of the pair): largest bucket that fits, no dice."""
        return self.assign(height, width, num_frames, rng=None)


# ---------------------------------------------------------------------------------------------------- manifests
@dataclass
class Row:
    index: int  # 1-based data row
    path: Path | None
    audio_path: Path | None
    text: str
    num_frames: int  # at the training fps
    height: float | None
    width: float | None
    fps: float
    path_reject: Path | None = None
    audio_path_reject: Path | None = None


def required_columns(kind: str, text_column: str) -> list[tuple[str, ...]]:
    """Each entry lists alternatives; at least one must be present."""
    if kind == "audio":
        return [("audio_path", "path"), (text_column, "text"), ("num_frames",)]
    base = [("path",), (text_column,), ("num_frames",), ("height",), ("width",)]
    return base + [("path_reject",)] if kind == "dpo" else base


def _resolve(value: str, root: Path) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def read_manifest(
    csv_path: str | Path,
    kind: str,
    buckets: BucketTable,
    text_column: str = "text",
    fps: float = 16,
    probe_media: bool = False,
) -> tuple[list[Row], list[RowProblem]]:
    """Valid rows and the problems of the others (row number + reason); bad rows are left out.

    Raises ``ManifestError`` when the file is missing, required columns are absent (naming them) or no row is usable.
    ``probe_media`` also opens every file to check that it holds at least ``num_frames`` frames (slow on big sets).
    """
    if kind not in KINDS:
        raise ValueError(f"manifest kind must be one of {KINDS}, got {kind!r}")
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ManifestError(f"manifest {csv_path} does not exist")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [" or ".join(alts) for alts in required_columns(kind, text_column) if not set(alts) & set(columns)]
        if missing:
            raise ManifestError(
                f"manifest {csv_path} lacks the column(s) {missing} needed for {kind!r} data; found {columns}"
            )
        records = list(reader)
    rows, problems = [], []
    for number, record in enumerate(records, start=1):
        row_or_problem = _parse_row(number, record, kind, text_column, fps, csv_path.parent, buckets, probe_media)
        (rows if isinstance(row_or_problem, Row) else problems).append(row_or_problem)
    for problem in problems:
        logger.warning("%s: %s (row skipped)", csv_path, problem)
    if not rows:
        details = "; ".join(str(p) for p in problems[:5])
        raise ManifestError(f"manifest {csv_path} has no usable row ({len(problems)} rejected: {details})")
    return rows, problems


def _parse_row(
    number: int, record: dict, kind: str, text_column: str, fps: float, root: Path, buckets: BucketTable,
    probe_media: bool,
) -> Row | RowProblem:  # fmt: skip
    def get(name: str) -> str:
        return (record.get(name) or "").strip()

    text = get(text_column) or get("text")
    if not text:
        return RowProblem(number, f"empty {text_column!r}")
    try:
        num_frames = float(get("num_frames"))
        row_fps = float(get("fps")) if get("fps") else (fps if kind != "audio" else 24.0)
        height = float(get("height")) if get("height") else None
        width = float(get("width")) if get("width") else None
    except ValueError as error:
        return RowProblem(number, f"not a number: {error}")
    if kind != "audio" and not (height and width):
        return RowProblem(number, "height and width must be positive numbers")
    frames = int(num_frames * fps / row_fps + 1e-6)  # length in frames at the training fps

    video = _resolve(get("path"), root) if kind != "audio" else None
    audio = _resolve(get("audio_path") or (get("path") if kind == "audio" else ""), root)
    files = {"path": video, "audio_path": audio}
    if kind == "dpo":
        files.update(path_reject=_resolve(get("path_reject"), root), audio_path_reject=_resolve(get("audio_path_reject"), root))
    for column, path in files.items():
        if path is None:
            if column in ("path", "path_reject") and kind != "audio":
                return RowProblem(number, f"empty {column!r}")
            continue
        if not path.is_file():
            return RowProblem(number, f"{column} file not found: {path}")
    if frames < buckets.min_frames:
        return RowProblem(number, f"clip has {frames} frames at {fps:g} fps, shorter than the smallest bucket "
                                  f"({buckets.min_frames} frames)")  # fmt: skip
    if kind == "dpo" and buckets.for_pair(height, width, frames) is None:
        return RowProblem(number, f"no bucket fits {height:g}x{width:g}, {frames} frames")
    if probe_media:
        for column in ("path", "path_reject"):
            if files.get(column) is not None:
                info = probe(files[column])
                actual = int((info["num_frames"] or 0) * fps / (info["fps"] or fps) + 1e-6)
                if actual < frames:
                    return RowProblem(number, f"{column} has {actual} frames at {fps:g} fps, fewer than num_frames {frames}")
    return Row(number, video, audio, text, frames, height, width, row_fps, files.get("path_reject"),
               files.get("audio_path_reject"))  # fmt: skip


# ---------------------------------------------------------------------------------------------------- batching
def epoch_batches(
    rows: list[Row], buckets: BucketTable, seed: int, epoch: int, kind: str, num_replicas: int = 1, rank: int = 0
) -> list[list[tuple[int, Bucket, int]]]:
    """This process's batches for an epoch: ``[(row position, bucket, item seed), ...]`` per batch.

    Deterministic in (seed, epoch), so resuming at batch k of an epoch replays exactly the same data. Batches
    never mix buckets; incomplete batches are dropped; every process gets the same number of batches.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    groups: dict[Bucket, list[int]] = {}
    for position, row in enumerate(rows):
        if kind == "dpo":
            bucket = buckets.for_pair(row.height, row.width, row.num_frames)
        else:
            bucket = buckets.assign(row.height, row.width, row.num_frames, rng)
        if bucket is not None:
            groups.setdefault(bucket, []).append(position)
    batches = []
    for bucket, members in sorted(groups.items(), key=lambda item: item[0].key):
        rng.shuffle(members)
        for start in range(0, len(members) - bucket.batch_size + 1, bucket.batch_size):
            batches.append([(pos, bucket, rng.randrange(2**31)) for pos in members[start : start + bucket.batch_size]])
    rng.shuffle(batches)
    usable = len(batches) - len(batches) % num_replicas
    return batches[rank:usable:num_replicas]


# ---------------------------------------------------------------------------------------------------- transforms
def resize_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> (3, T, height, width) in [-1, 1]: resize to fill (bilinear), centre crop."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    resized = F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    cropped = resized[:, :, top : top + height, left : left + width]
    return (cropped / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    return audio[:length] if len(audio) >= length else np.pad(audio, (0, length - len(audio)))


def audio_window(audio: np.ndarray, total_frames: int, start: int, num_frames: int, fps: float) -> np.ndarray:
    """The audio under frames [start, start + num_frames) of a clip of ``total_frames`` frames (docs/official.md §3.3)."""
    audio = fit_length(audio, math.ceil(total_frames / fps * SAMPLE_RATE))
    per_frame = len(audio) / total_frames
    end, length = round((start + num_frames) * per_frame), round(num_frames * per_frame)
    return fit_length(audio[max(0, end - length) : end], length)


class DataError(RuntimeError):
    """A file that turned out unusable at read time (the batch goes on without it)."""


class ManifestDataset(torch.utils.data.Dataset):
    """Items are ``(row position, bucket, seed)`` from :func:`epoch_batches`; returns decoded, cropped tensors."""

    def __init__(self, rows: list[Row], kind: str, fps: float = 16):
        self.rows, self.kind, self.fps = rows, kind, fps

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, Bucket, int]) -> dict:
        position, bucket, seed = item
        row = self.rows[position]
        rng = random.Random(seed)
        size = {"bucket": (bucket.height, bucket.width, bucket.num_frames)}
        try:
            if self.kind == "audio":
                return {"row": row.index, "text": row.text, **size, **self._audio_only(row, bucket, rng)}
            sample = {"row": row.index, "text": row.text, **size, **self._clip(row.path, row.audio_path, bucket, rng)}
            if self.kind == "dpo":
                reject = self._clip(row.path_reject, row.audio_path_reject, bucket, random.Random(seed))
                sample.update(video_reject=reject["video"], audio_reject=reject["audio"])
            return sample
        except DataError as error:
            return {"row": row.index, "error": f"row {row.index}: {error}"}
        except Exception as error:  # a corrupt or unreadable file must not stop a long run
            reason = re.sub(r"^\[Errno -?\d+\] ", "", str(error))  # PyAV's errno is a FourCC, not an OS error
            files = ", ".join(dict.fromkeys(str(path) for path in (row.path, row.audio_path) if path is not None))
            return {"row": row.index, "error": f"row {row.index}: could not read {files} ({reason})"}

    def _audio_only(self, row: Row, bucket: Bucket, rng: random.Random) -> dict:
        audio = _read_audio(row.audio_path, SAMPLE_RATE)
        need = round(bucket.num_frames / self.fps * SAMPLE_RATE)
        if len(audio) < need * 0.98:
            raise DataError(f"{row.audio_path} holds {len(audio) / SAMPLE_RATE:.2f} s, shorter than its bucket "
                            f"({need / SAMPLE_RATE:.2f} s)")  # fmt: skip
        start = rng.randrange(max(1, len(audio) - need + 1))
        return {"video": None, "audio": torch.from_numpy(fit_length(audio[start:], need).copy())}

    def _clip(self, path: Path, audio_path: Path | None, bucket: Bucket, rng: random.Random) -> dict:
        frames, audio, _ = read_video(path, fps=self.fps)
        if audio_path is not None:
            audio = _read_audio(audio_path, SAMPLE_RATE)
        total = len(frames)
        if total < bucket.num_frames:
            raise DataError(f"{path} has {total} frames at {self.fps:g} fps, shorter than its bucket "
                            f"({bucket.num_frames} frames)")  # fmt: skip
        start = rng.randrange(total - bucket.num_frames + 1)
        clip = torch.from_numpy(frames[start : start + bucket.num_frames]).permute(0, 3, 1, 2)
        window = audio_window(audio, total, start, bucket.num_frames, self.fps)
        return {"video": resize_crop(clip, bucket.height, bucket.width), "audio": torch.from_numpy(window.copy())}


def collate(items: list[dict]) -> dict:
    """Stack a bucket's items; unreadable items are reported and left out (the batch may shrink or vanish)."""
    errors = [item["error"] for item in items if "error" in item]
    for error in errors:
        logger.warning("skipping a sample: %s", error)
    items = [item for item in items if "error" not in item]
    if not items:
        return {"size": 0, "errors": errors}
    batch: dict[str, Any] = {"size": len(items), "errors": errors, "rows": [i["row"] for i in items],
                             "text": [i["text"] for i in items], "bucket": items[0]["bucket"]}  # fmt: skip
    for key in ("video", "audio", "video_reject", "audio_reject"):
        if key in items[0] and items[0][key] is not None:
            batch[key] = torch.stack([item[key] for item in items])
    if "cached" in items[0]:  # pre-extracted latents (cache.py); text embeddings keep their own lengths
        batch["cached"] = {key: [item["cached"][key] for item in items] for key in items[0]["cached"]}
    return batch
