"""CI: the Comfy registry package of this repository (``comfy node pack`` output, given as argv[1]) is a node pack.

Unpacked into a custom_nodes/ folder it holds the pack's root ``__init__.py`` with ``comfy_entrypoint``, the nodes,
javis_core and the demo model's weights, and none of the developer-only folders; its javis_core is the one that
ComfyUI's process imports once the entrypoint has put the unpacked folder on sys.path.
"""

import importlib.util
import inspect
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

package = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    target = Path(tmp) / "custom_nodes" / "comfyui-javisdit"
    with zipfile.ZipFile(package) as archive:
        names = archive.namelist()
        archive.extractall(target)
    for required in ("__init__.py", "pyproject.toml", "requirements.txt", "comfy_nodes/nodes_v3.py",
                     "javis_core/pipelines/pipeline_javisdit.py", "assets/demo_model/transformer/diffusion_pytorch_model.safetensors",
                     "example_workflows/javisdit_t2av.json"):  # fmt: skip
        assert required in names, f"{required} is missing from {package}"
    left_out = [name for name in names if name.split("/")[0] in ("tests", "training", ".ci", "benchmarks")]
    assert not left_out, f"developer-only files in {package}: {left_out[:5]}"
    # what ComfyUI's load_custom_node does with a folder in custom_nodes/
    spec = importlib.util.spec_from_file_location(str(target).replace(".", "_x_"), target / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert inspect.iscoroutinefunction(module.comfy_entrypoint), "the root __init__.py must define comfy_entrypoint"
    probe = ("import sys; sys.path.append(sys.argv[1]); import javis_core, comfy_nodes.specs; "
             "from javis_core.demo.model import DEMO_DIR, demo_available; "
             "assert javis_core.__file__.startswith(sys.argv[1]), javis_core.__file__; "
             "assert demo_available(DEMO_DIR); print(len(comfy_nodes.specs.NODE_SPECS), 'nodes')")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"{package}: {len(names)} files, root pack loads ({result.stdout.strip()})")
