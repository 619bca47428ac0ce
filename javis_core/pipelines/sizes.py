"""Resolutions, aspect ratios and durations of JavisDiT++ (docs/official.md §6), with input validation.

Aspect-ratio strings follow the official "H:W" convention: "9:16" is landscape (240 x 426 at 240p).
"""

from __future__ import annotations

import math

FPS = 16
SAMPLE_RATE = 16000
RESOLUTIONS = ("240p", "360p", "480p")
DURATIONS = (2.0, 5.0)  # seconds, inclusive

# ratio string (H:W) -> table key
ASPECT_RATIOS = {
    "3:8": 0.38, "9:21": 0.43, "12:25": 0.48, "1:2": 0.50, "9:17": 0.53, "27:50": 0.54, "9:16": 0.56,
    "5:8": 0.62, "2:3": 0.67, "3:4": 0.75, "1:1": 1.00, "4:3": 1.33, "3:2": 1.50, "16:9": 1.78,
    "17:9": 1.89, "2:1": 2.00, "50:27": 2.08,
}  # fmt: skip
# table key -> (H, W) at 240p, 360p, 480p
_SIZES = {
    0.38: ((196, 522), (294, 784), (392, 1046)),
    0.43: ((210, 490), (314, 732), (420, 980)),
    0.48: ((222, 462), (332, 692), (444, 925)),
    0.50: ((226, 452), (340, 680), (452, 904)),
    0.53: ((232, 438), (350, 662), (466, 880)),
    0.54: ((236, 436), (352, 652), (470, 870)),
    0.56: ((240, 426), (360, 640), (480, 854)),
    0.62: ((252, 404), (380, 608), (506, 810)),
    0.67: ((262, 393), (392, 588), (522, 784)),
    0.75: ((276, 368), (416, 554), (554, 738)),
    1.00: ((320, 320), (480, 480), (640, 640)),
    1.33: ((370, 278), (554, 416), (740, 555)),
    1.50: ((392, 262), (588, 392), (784, 522)),
    1.78: ((426, 240), (640, 360), (854, 480)),
    1.89: ((440, 232), (660, 350), (880, 466)),
    2.00: ((452, 226), (678, 340), (906, 454)),
    2.08: ((462, 222), (692, 332), (924, 444)),
}
# Friendly names for the UI and the command line.
ASPECT_PRESETS = {"landscape": "9:16", "portrait": "16:9", "square": "1:1"}


def image_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(height, width) requested for a resolution and an official "H:W" ratio string or preset name."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)} (got {resolution!r})")
    ratio = ASPECT_PRESETS.get(aspect_ratio, aspect_ratio)
    if ratio not in ASPECT_RATIOS:
        allowed = ", ".join(list(ASPECT_PRESETS) + list(ASPECT_RATIOS))
        raise ValueError(f"aspect_ratio must be one of {allowed} (got {aspect_ratio!r}; ratios are height:width)")
    return _SIZES[ASPECT_RATIOS[ratio]][RESOLUTIONS.index(resolution)]


def frames_for_duration(duration: float) -> int:
    """Seconds -> a 4k+1 frame count at 16 fps (2 s -> 33, 3 -> 49, 4 -> 65, 5 -> 81), the training buckets."""
    low, high = DURATIONS
    if not isinstance(duration, (int, float)) or math.isnan(duration) or not low <= duration <= high:
        raise ValueError(f"duration must be between {low:g} and {high:g} seconds (got {duration!r})")
    return 4 * round(duration * FPS / 4) + 1

