"""JavisDiT++ joint audio-video generation on diffusers."""
