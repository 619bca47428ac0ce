"""JavisDiT++ for ComfyUI: text to a short video with its own soundtrack, as graph nodes (V3 node API).

The repository root is the node pack (its ``__init__.py`` hands ComfyUI this package's ``comfy_entrypoint``).
The node logic (``core``) and schemas (``specs``) import only javis_core and torch, so they are tested without
ComfyUI; the V3 wrapper (``nodes_v3``) and ComfyUI's object types (``comfy_types``) are imported only when
ComfyUI asks for the nodes.
"""

from __future__ import annotations


async def comfy_entrypoint():
    from .nodes_v3 import JavisDiTExtension

    return JavisDiTExtension()
