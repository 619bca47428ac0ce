"""Three-stage JavisDiT++ training (spec 8): audio pre-training, audio-video LoRA SFT, AV-DPO.

The runner is ``training/train.py``; this package holds the pieces it is built from, each usable alone.
"""
