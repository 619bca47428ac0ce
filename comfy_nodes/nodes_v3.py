"""ComfyUI V3 nodes (``comfy_api.latest``) built from the plain specs; imported only inside ComfyUI."""

from __future__ import annotations

import os
from functools import cache

from comfy_api.latest import ComfyExtension, io

from . import comfy_types, core
from .specs import NODE_SPECS, NodeSpec, Output, Param

NATIVE_TYPES = {
    "IMAGE": io.Image, "AUDIO": io.Audio, "FLOAT": io.Float, "MODEL": io.Model, "CLIP": io.Clip, "VAE": io.Vae,
    "CONDITIONING": io.Conditioning, "LATENT": io.Latent,
}  # fmt: skip


@cache
def socket_type(name: str) -> type[io.ComfyTypeIO]:
    return NATIVE_TYPES.get(name) or io.Custom(name)


def make_input(p: Param) -> io.Input:
    common = {"tooltip": p.tooltip or None, "optional": p.optional}
    if p.type == "INT":
        return io.Int.Input(p.id, default=p.default, min=p.min, max=p.max, step=p.step,
                            control_after_generate=p.control_after_generate or None, **common)  # fmt: skip
    if p.type == "FLOAT":
        return io.Float.Input(p.id, default=p.default, min=p.min, max=p.max, step=p.step, **common)
    if p.type == "STRING":
        return io.String.Input(p.id, default=p.default, multiline=p.multiline, **common)
    if p.type == "BOOLEAN":
        return io.Boolean.Input(p.id, default=p.default, **common)
    if p.type == "COMBO":
        return io.Combo.Input(p.id, options=p.choices(), default=p.default, **common)
    return socket_type(p.type).Input(p.id, **common)


def make_output(o: Output) -> io.Output:
    # output ids are left to ComfyUI: they may not repeat input ids ("model", "latent", ...)
    return socket_type(o.type).Output(display_name=o.name, tooltip=o.tooltip or None)


def make_node(spec: NodeSpec) -> type[io.ComfyNode]:
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
            description=spec.description, inputs=[make_input(p) for p in spec.inputs],
            outputs=[make_output(o) for o in spec.outputs],
        )  # fmt: skip

    def execute(cls, **inputs) -> io.NodeOutput:
        for p in spec.inputs:
            if p.type in comfy_types.UNWRAP_INPUT:
                inputs[p.id] = comfy_types.UNWRAP_INPUT[p.type](inputs[p.id])
        if spec.step_hooks:
            inputs["hooks"] = comfy_types.StepHooks(inputs["model"])
        results = spec.run(**inputs)
        wrapped = [comfy_types.WRAP_OUTPUT.get(o.type, lambda value: value)(value)
                   for o, value in zip(spec.outputs, results)]  # fmt: skip
        return io.NodeOutput(*wrapped)

    namespace = {"define_schema": classmethod(define_schema), "execute": classmethod(execute),
                 "__doc__": spec.description, "__module__": __name__}  # fmt: skip
    return type(spec.node_id, (io.ComfyNode,), namespace)


NODES = [make_node(spec) for spec in NODE_SPECS]


def register_model_folder() -> None:
    """ComfyUI/models/javisdit/ (kept after any ``javisdit:`` entries of extra_model_paths.yaml)."""
    import folder_paths

    folder_paths.add_model_folder_path(core.MODEL_FOLDER, os.path.join(folder_paths.models_dir, core.MODEL_FOLDER))


class JavisDiTExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_model_folder()  # this ComfyUI version never awaits on_load
        return NODES
