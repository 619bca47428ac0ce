"""Three-stage JavisDiT++ training (docs/official.md §8): audio pre-training, audio-video LoRA SFT, AV-DPO.

The runner is ``javis_core.training.runner`` (``javis-train``); this package holds the pieces it is built from,
each usable alone.
"""
