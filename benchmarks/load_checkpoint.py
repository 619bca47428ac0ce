"""Time and peak memory to load a full-size JavisDiT++ checkpoint in the official release layout.

    python benchmarks/load_checkpoint.py [--workdir DIR] [--keep]

Writes a random bf16 checkpoint shaped exactly like JavisVerse/JavisDiT-v1.0-jav (model/ = 1 GB colossalai-style
.bin shards with the 982 official keys plus the unmerged lora_A/B.default tensors, lora/ = a PEFT adapter r 64,
alpha 16 on the 12 official targets), then loads it through ``javis_core.loaders.checkpoints.load_transformer`` in a fresh
process (LoRA merged, bf16, CPU) and prints the wall time and the peak resident set size against the size of the
checkpoint (target: at most 1.3x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from javis_core.loaders.official_keys import OFFICIAL_LORA_TARGETS  # noqa: E402

SHARD_BYTES = 1024**3
RANK, ALPHA = 64, 16


def official_shapes() -> dict[str, list[int]]:
    spec = json.loads((REPO / "tests" / "fixtures" / "official_state_dict.json").read_text())
    return {entry["key"]: entry["shape"] for entry in spec["state_dict"]}


def lora_shapes(shapes: dict[str, list[int]]) -> dict[str, tuple[list[int], list[int]]]:
    modules = sorted({key[: -len(".weight")] for key in shapes if key.endswith(".weight")})
    targets = [m for m in modules if m.startswith("blocks.") and m.split(".", 2)[2] in OFFICIAL_LORA_TARGETS]
    return {m: ([RANK, shapes[m + ".weight"][1]], [shapes[m + ".weight"][0], RANK]) for m in targets}


def write_checkpoint(root: Path) -> int:
    shapes = official_shapes()
    generator = torch.Generator().manual_seed(0)
    model_dir, lora_dir = root / "model", root / "lora"
    model_dir.mkdir(parents=True)
    lora_dir.mkdir()
    tensors = {key: (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16) for key, shape in shapes.items()}
    adapter = {}
    for module, (a_shape, b_shape) in lora_shapes(shapes).items():
        lora_a = (torch.randn(a_shape, generator=generator) * 0.01).to(torch.bfloat16)
        lora_b = (torch.randn(b_shape, generator=generator) * 0.01).to(torch.bfloat16)
        tensors[f"{module}.lora_A.default.weight"], tensors[f"{module}.lora_B.default.weight"] = lora_a, lora_b
        adapter[f"base_model.model.{module}.lora_A.weight"] = lora_a.clone()
        adapter[f"base_model.model.{module}.lora_B.weight"] = lora_b.clone()

    shards, current, size = [], {}, 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key], size = tensor, size + nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for index, shard in enumerate(shards, start=1):
        name = f"pytorch_model-{index:05d}.bin"
        torch.save(shard, model_dir / name)
        for key, tensor in shard.items():
            weight_map[key] = name
            total += tensor.numel() * tensor.element_size()
    (model_dir / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    save_file(adapter, lora_dir / "adapter_model.safetensors")
    targets = [f"{kind}.{name}" for kind in ("self_attn", "cross_attn") for name in "qkvo"]
    targets += ["ffn.0", "ffn.2", "audio_ffn.0", "audio_ffn.2"]
    (lora_dir / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.05, "bias": "none",
                    "target_modules": targets, "use_rslora": False})  # fmt: skip
    )
    return sum(f.stat().st_size for f in model_dir.iterdir()) + sum(f.stat().st_size for f in lora_dir.iterdir())


def load_in_child(root: Path) -> dict:
    code = (
        "import json, resource, time, torch, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from javis_core.loaders.checkpoints import load_transformer\n"
        "start = time.perf_counter()\n"
        f"model = load_transformer({str(root)!r}, torch_dtype=torch.bfloat16)\n"
        "seconds = time.perf_counter() - start\n"
        "params = sum(p.numel() for p in model.parameters())\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps({'seconds': seconds, 'peak_rss': peak, 'params': params}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where to write the checkpoint (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="javis_bench_")) / "JavisDiT-v1.0-jav-random"
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    size = write_checkpoint(root)
    print(f"wrote {root} ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s")
    result = load_in_child(root)
    print(f"load_transformer(release dir, bf16, LoRA merged): {result['seconds']:.1f} s, "
          f"{result['params']:,} parameters")  # fmt: skip
    print(f"peak RSS {result['peak_rss'] / 1e9:.2f} GB = {result['peak_rss'] / size:.2f}x the checkpoint "
          f"({size / 1e9:.2f} GB); target <= 1.30x")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root.parent if args.workdir is None else root)


if __name__ == "__main__":
    main()
