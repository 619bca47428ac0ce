"""This repository is also a ComfyUI node pack: ComfyUI imports this file when the repository is cloned into
``ComfyUI/custom_nodes/`` (or a registry package of it is unpacked there) and calls ``comfy_entrypoint``.

Nothing here runs outside ComfyUI: ``python app.py``, ``python -m javis_core.generate`` and the tests import
``javis_core`` and ``comfy_nodes`` as top-level packages, as ComfyUI's process does once this folder is on sys.path.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))


async def comfy_entrypoint():
    # appended, not prepended: an installed javis_core wins, and top-level names of ComfyUI itself are not shadowed
    if _ROOT not in sys.path:
        sys.path.append(_ROOT)
    from comfy_nodes import comfy_entrypoint as pack_entrypoint

    return await pack_entrypoint()
