"""JavisDiT++ for ComfyUI: text to a short video with its own soundtrack, as graph nodes (V3 node API).

ComfyUI loads this folder from custom_nodes/ and calls ``comfy_entrypoint``. The node logic (``core``) and
schemas (``specs``) import only javis_core and torch, so they are tested without ComfyUI; the V3 wrapper
(``nodes_v3``) is imported only when ComfyUI asks for the nodes.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _ensure_javis_core() -> None:
    """Use an installed javis_core, else the one beside this pack in the JavisDiT++ checkout (a symlinked
    custom_nodes/ entry resolves to it)."""
    try:
        import javis_core  # noqa: F401
    except ImportError:
        checkout = Path(__file__).resolve().parent.parent
        if not (checkout / "javis_core" / "__init__.py").exists():
            raise ImportError(
                "the JavisDiT++ nodes need the javis_core package: link comfy_nodes/ from a JavisDiT++ checkout "
                "into ComfyUI/custom_nodes/ (see comfy_nodes/README.md)"
            ) from None
        sys.path.insert(0, str(checkout))


async def comfy_entrypoint():
    _ensure_javis_core()
    from .nodes_v3 import JavisDiTExtension

    return JavisDiTExtension()
