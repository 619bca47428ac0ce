"""Opt-in: the node pack inside a real, headless ComfyUI on the CPU, driven over its HTTP API.

ComfyUI is not on the package registries, so this runs only when COMFYUI_DIR points at a ComfyUI checkout
(and COMFYUI_PYTHON, optionally, at the Python of a venv with ComfyUI's requirements and this repository's
requirements.txt); otherwise every test here is skipped with that reason, in CI too. The pack is installed the
way ComfyUI-Manager's "install via git URL" does it: the repository's files (what a clone holds: tracked and
not ignored, no symlinks) in ``custom_nodes/JavisDiT/``, found through ``--extra-model-paths-config``, which also
maps ``javisdit`` to a temp models folder holding the tiny random pipeline; nothing is written into ComfyUI.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from comfy_nodes.specs import NODE_SPECS
from javis_core.media import probe
from javis_core.codecs.audio import save_tiny_audioldm2
from javis_core.tiny import save_tiny_pipeline

from .conftest import FIXTURES, REPO

WORKFLOW = FIXTURES / "comfyui" / "javisdit_t2av_api.json"  # the example graph in API format
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
STARTUP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 900  # a loaded 2-core machine needs minutes for the tiny Wan VAE decode

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR,
    reason="COMFYUI_DIR is not set: ComfyUI cannot be installed from the package registries; point COMFYUI_DIR "
    "at a ComfyUI checkout (and COMFYUI_PYTHON at its venv's python) to run the ComfyUI integration test",
)


class Comfy:
    def __init__(self, url: str, process: subprocess.Popen, log: Path, output: Path) -> None:
        self.url, self.process, self.log, self.output = url, process, log, output

    def request(self, path: str, payload: dict | None = None) -> tuple[int, dict]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def submit(self, workflow: dict) -> str:
        status, body = self.request("/prompt", {"prompt": workflow, "client_id": "javisdit-test"})
        assert status == 200, f"/prompt refused the workflow: {json.dumps(body)[:3000]}"
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, history = self.request(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"]["completed"] or entry["status"].get("status_str") == "error"
            ):
                return entry
            assert self.process.poll() is None, f"ComfyUI exited:\n{self.log_tail()}"
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log_tail()}")


def clone_repository(target: Path) -> None:
    """The files a git clone of this working tree holds (tracked or new, not ignored), copied without links."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


TINY_LORA = "javisdit_demo_lora.safetensors"


def save_tiny_lora(path: Path) -> None:
    """A rank-4 LoRA on the demo transformer's first self-attention query (width 192), in the diffusers/peft key
    layout (``diffusion_model.<our key>.lora_A/B.weight``) that ComfyUI's LoRA loaders read."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    key = "diffusion_model.blocks.0.attn1.to_q"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{key}.lora_A.weight": torch.randn(4, 192, generator=generator),
               f"{key}.lora_B.weight": torch.randn(192, 4, generator=generator)}, str(path))  # fmt: skip


# A full-size Wan2.1 VAE in ComfyUI's layout with random weights (what a Wan user has in vae/wan_2.1_vae.safetensors)
MAKE_WAN_VAE_SCRIPT = r'''
import sys
import safetensors.torch, torch
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.ldm.wan.vae

torch.manual_seed(0)
model = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                 temperal_downsample=[False, True, True])
weights = {}
for name, value in model.state_dict().items():  # ComfyUI's layers skip init: give every tensor a sane random value
    if name.endswith("gamma"):
        weights[name] = 1 + 0.1 * torch.randn_like(value)
    elif value.ndim > 1:
        weights[name] = torch.randn_like(value) / value[0].numel() ** 0.5
    else:
        weights[name] = 0.02 * torch.randn_like(value)
safetensors.torch.save_file(weights, sys.argv[1])
'''
# ComfyUI's own VAE object on that file decodes a LATENT, as Load VAE + VAE Decode do
COMFY_WAN_VAE_DECODE_SCRIPT = r'''
import sys
import safetensors.torch
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.sd, comfy.utils

checkpoint, latent_file, out = sys.argv[1:4]
vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(checkpoint))
images = vae.decode(safetensors.torch.load_file(latent_file)["samples"])
safetensors.torch.save_file({"images": images.float().contiguous()}, out)
'''
TINY_SINGLE_FILE = "javisdit_tiny.safetensors"


@pytest.fixture(scope="module")
def wan_vae_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vae") / "wan_2.1_vae.safetensors"
    done = subprocess.run([COMFYUI_PYTHON, "-c", MAKE_WAN_VAE_SCRIPT, str(path)], cwd=COMFYUI_DIR, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, f"could not write a Wan2.1 VAE file with ComfyUI's class:\n{done.stderr[-3000:]}"
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, wan_vae_file) -> Comfy:
    from javis_core.convert import main as convert

    root = tmp_path_factory.mktemp("comfyui")
    custom_nodes = root / "custom_nodes"
    clone_repository(custom_nodes / "JavisDiT")
    tiny = save_tiny_pipeline(root / "models" / "javisdit" / "tiny")
    save_tiny_audioldm2(root / "models" / "javisdit" / "audioldm2")  # cvssp/audioldm2's vae/ + vocoder/ layout
    (root / "models" / "diffusion_models").mkdir()
    single_file = root / "models" / "diffusion_models" / TINY_SINGLE_FILE
    assert convert(["--official", str(tiny), "--out", str(single_file)]) == 0
    save_tiny_lora(root / "models" / "loras" / TINY_LORA)
    config = root / "extra_model_paths.yaml"
    config.write_text(f"javisdit_test:\n  custom_nodes: {custom_nodes}\n  javisdit: {root / 'models' / 'javisdit'}\n"
                      f"  loras: {root / 'models' / 'loras'}\n  diffusion_models: {single_file.parent}\n"
                      f"  vae: {wan_vae_file.parent}\n")  # fmt: skip
    dirs = {name: root / name for name in ("output", "input", "temp", "user")}
    for path in dirs.values():
        path.mkdir()
    port = _free_port()
    command = [
        COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--extra-model-paths-config", str(config), "--database-url", "sqlite:///:memory:", "--preview-method", "auto",
        *(arg for name, path in dirs.items() for arg in (f"--{name}-directory", str(path))),
    ]  # fmt: skip
    log = root / "comfyui.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=sink, stderr=subprocess.STDOUT)
    server = Comfy(f"http://127.0.0.1:{port}", process, log, dirs["output"])
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, f"ComfyUI exited at start-up:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"ComfyUI did not answer in {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}"
            try:
                if server.request("/system_stats")[0] == 200:  # custom nodes load before the server starts
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def demo_workflow(steps: int = 4, prompt: str = "a red ball bounces on the floor") -> dict:
    """The example graph (native CLIPTextEncode, VAEDecode, CreateVideo, SaveVideo around our loaders, Empty
    Latents, sampler and audio decode) on the shipped demo model: 240p 16:9, 2 s."""
    workflow = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    workflow["5"]["inputs"]["text"] = prompt
    workflow["8"]["inputs"]["steps"] = steps
    workflow["12"]["inputs"]["filename_prefix"] = "javisdit_test/demo"
    return workflow


def tiny_workflow(steps: int = 2) -> dict:
    """The same graph on the tiny random pipeline from the javisdit model folder (Wan-layout VAE, umT5)."""
    workflow = demo_workflow(steps)
    for node_id, source in (("1", "model"), ("2", "text_encoder"), ("3", "vae"), ("4", "audio_vae")):
        workflow[node_id]["inputs"][source] = "tiny"
    workflow["12"]["inputs"]["filename_prefix"] = "javisdit_test/tiny"
    return workflow


def saved_clip(comfy: Comfy, entry: dict) -> dict:
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + comfy.log_tail()
    saved = entry["outputs"]["12"]["images"]
    assert len(saved) == 1
    return probe(comfy.output / saved[0]["subfolder"] / saved[0]["filename"])


def test_the_pack_loads_from_a_clone_in_custom_nodes(comfy):
    log = comfy.log.read_text(errors="replace")
    assert "IMPORT FAILED" not in log and "custom_nodes/JavisDiT" in log
    assert not any(path.is_symlink() for path in (comfy.output.parent / "custom_nodes").rglob("*"))


def test_every_node_is_registered_with_its_schema(comfy):
    for spec in NODE_SPECS:
        status, info = comfy.request(f"/object_info/{spec.node_id}")
        assert status == 200 and spec.node_id in info, f"{spec.node_id} not registered:\n{comfy.log_tail()}"
        node = info[spec.node_id]
        assert node["display_name"] == spec.display_name and node["category"] == spec.category
        required = node["input"]["required"]
        assert list(required) == [p.id for p in spec.inputs]
        for p in spec.inputs:
            kind, options = required[p.id][0], required[p.id][1] if len(required[p.id]) > 1 else {}
            if p.type == "COMBO":  # model dropdowns: the demo, the server's model folder (and single files)
                expected = ["demo", "audioldm2", "tiny"] if callable(p.options) else p.choices()
                if spec.node_id == "JavisDiTModelLoader" and p.id == "model":
                    expected.append(TINY_SINGLE_FILE)
                assert options["options"] == expected and options["default"] == p.default
            else:
                assert kind == p.type
                if p.is_widget:
                    assert options.get("default") == p.default
        assert node["output"] == [o.type for o in spec.outputs]
        assert node["output_name"] == [o.name for o in spec.outputs]


def test_demo_model_graph_with_native_nodes_saves_an_mp4_with_sound(comfy):
    info = saved_clip(comfy, comfy.wait(comfy.submit(demo_workflow())))
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"], info["num_frames"]) == (448, 256, 33)  # 240p 16:9 on the 32-px grid
    assert info["fps"] == pytest.approx(16)
    assert info["audio_duration"] == pytest.approx(33 / 16, abs=0.1)


def test_tiny_pipeline_graph_decodes_with_the_wan_vae(comfy):
    info = saved_clip(comfy, comfy.wait(comfy.submit(tiny_workflow())))
    assert (info["width"], info["height"], info["num_frames"]) == (432, 240, 33)  # Wan's 8-px grid, 16-px rounded
    assert info["audio_codec"] == "aac" and info["audio_duration"] == pytest.approx(33 / 16, abs=0.1)


def test_wan_users_graph_with_comfyuis_load_vae_and_a_single_file_checkpoint(comfy):
    """A Wan2.1 user's setup: the JavisDiT++ checkpoint as one file in diffusion_models/ (our Model Loader),
    ComfyUI's own Load VAE on vae/wan_2.1_vae.safetensors feeding Empty Latents and the native VAE Decode, and the
    AudioLDM2 files in models/javisdit/audioldm2/ (vae/ + vocoder/, as cvssp/audioldm2 has them)."""
    workflow = tiny_workflow()
    workflow["1"]["inputs"]["model"] = TINY_SINGLE_FILE
    workflow["4"]["inputs"]["audio_vae"] = "audioldm2"
    workflow["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}
    workflow["12"]["inputs"]["filename_prefix"] = "javisdit_test/wan_user"
    info = saved_clip(comfy, comfy.wait(comfy.submit(workflow)))
    assert (info["width"], info["height"], info["num_frames"]) == (432, 240, 33) and info["audio_codec"] == "aac"


def test_tiled_vae_decode_matches_the_plain_one(comfy):
    """ComfyUI's VAE Decode (Tiled) on our VAE and LATENT: 128-px tiles of the demo clip give its plain decode."""
    from javis_core.media import read_video

    workflow = demo_workflow(steps=2, prompt="a yellow light blinks")
    workflow["20"] = {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["8", 0], "vae": ["3", 0], "tile_size": 128,
                      "overlap": 32, "temporal_size": 64, "temporal_overlap": 8}}  # fmt: skip
    workflow["21"] = {"class_type": "CreateVideo", "inputs": {"images": ["20", 0], "fps": 16.0, "audio": ["10", 0]}}
    workflow["22"] = {"class_type": "SaveVideo", "inputs": {"video": ["21", 0], "format": "auto", "codec": "auto",
                                                            "filename_prefix": "javisdit_test/tiled"}}  # fmt: skip
    entry = comfy.wait(comfy.submit(workflow))
    saved_clip(comfy, entry)
    clips = []
    for node in ("12", "22"):
        saved = entry["outputs"][node]["images"][0]
        clips.append(np.asarray(read_video(comfy.output / saved["subfolder"] / saved["filename"])[0], np.float32))
    assert clips[0].shape == clips[1].shape == (33, 256, 448, 3)
    assert np.abs(clips[0] - clips[1]).mean() < 2 and clips[0].std() > 5


def test_comfyuis_lora_loader_patches_our_model(comfy):
    from javis_core.media import read_video

    plain = demo_workflow(steps=2)
    plain["12"]["inputs"]["filename_prefix"] = "javisdit_test/no_lora"
    patched = demo_workflow(steps=2)
    patched["13"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": ["1", 0], "lora_name": TINY_LORA, "strength_model": 1.0}}  # fmt: skip
    patched["8"]["inputs"]["model"] = ["13", 0]
    patched["12"]["inputs"]["filename_prefix"] = "javisdit_test/lora"
    clips = []
    for workflow in (plain, patched):
        entry = comfy.wait(comfy.submit(workflow))
        saved_clip(comfy, entry)
        saved = entry["outputs"]["12"]["images"][0]
        clips.append(read_video(comfy.output / saved["subfolder"] / saved["filename"])[0])
    assert "lora key not loaded" not in comfy.log.read_text(errors="replace")
    assert np.abs(np.asarray(clips[0], dtype=np.float32) - np.asarray(clips[1], dtype=np.float32)).mean() > 1


def test_invalid_input_is_refused_naming_the_node(comfy):
    workflow = demo_workflow()
    workflow["7"]["inputs"]["duration"] = 9.0  # beyond the 5 s maximum
    status, body = comfy.request("/prompt", {"prompt": workflow, "client_id": "javisdit-test"})
    assert status == 400
    assert "7" in body["node_errors"] and "duration" in json.dumps(body["node_errors"]["7"])


def test_mixing_the_demo_text_encoder_with_another_model_says_why(comfy):
    workflow = tiny_workflow()
    workflow["2"]["inputs"]["text_encoder"] = "demo"  # MiniLM features (384) into the tiny model (32)
    entry = comfy.wait(comfy.submit(workflow))
    assert entry["status"]["status_str"] == "error"
    error = next(body for name, body in entry["status"]["messages"] if name == "execution_error")
    assert "positive: text features of width 384, the model reads 32" in error["exception_message"]
    assert len(error["exception_message"]) < 300


def world_clip_inputs(comfy: Comfy) -> np.ndarray:
    """A 2 s drum clip of the demo world at 24 fps and 320x240 (another rate and size than the clip's) with its
    sound, in ComfyUI's input folder under the names the example graphs use; returns its frames."""
    from PIL import Image

    from javis_core.demo import world as demo_world
    from javis_core.media import write_video, write_wav

    inputs = comfy.output.parent / "input"
    scene = demo_world.sample_scene(np.random.default_rng(1), 2.0, "drum", "red")
    frames, sound = demo_world.render(scene.kind, scene.colour, scene.event_times, 48, 240, 320, fps=24)
    write_video(inputs / "your_clip.mp4", frames, fps=24, audio=sound)
    write_wav(inputs / "your_sound.wav", sound)
    Image.fromarray(frames[0]).save(inputs / "your_picture.png")
    return frames


def example_workflow(name: str, steps: int = 4) -> dict:
    """A conditioned example graph of example_workflows/ (its API form) on the demo model."""
    workflow = json.loads((WORKFLOW.parent / f"javisdit_{name}_api.json").read_text())
    workflow["8"]["inputs"]["steps"] = steps
    workflow["12"]["inputs"]["filename_prefix"] = f"javisdit_test/{name}"
    return workflow


def test_video_to_audio_graph_keeps_the_picture_and_adds_a_sound(comfy):
    """Load Video -> Get Video Components -> our Reference Video -> sampler -> Audio Decode; Create Video takes the
    user's own frames and fps with the new sound."""
    from javis_core.media import read_video

    frames = world_clip_inputs(comfy)
    entry = comfy.wait(comfy.submit(example_workflow("video_to_audio")))
    info = saved_clip(comfy, entry)
    assert (info["width"], info["height"], info["num_frames"]) == (320, 240, 48) and info["fps"] == pytest.approx(24)
    assert info["audio_codec"] == "aac" and info["audio_duration"] == pytest.approx(33 / 16, abs=0.1)
    saved = entry["outputs"]["12"]["images"][0]
    written, sound, _ = read_video(comfy.output / saved["subfolder"] / saved["filename"])
    assert np.abs(np.asarray(written, np.float32) - frames.astype(np.float32)).mean() < 3  # h264 twice, no VAE
    assert np.asarray(sound).std() > 1e-3


def test_audio_to_video_graph_keeps_the_sound_and_makes_a_picture(comfy):
    world_clip_inputs(comfy)
    info = saved_clip(comfy, comfy.wait(comfy.submit(example_workflow("audio_to_video"))))
    assert (info["width"], info["height"], info["num_frames"]) == (448, 256, 33)
    assert info["audio_codec"] == "aac" and info["audio_duration"] == pytest.approx(2.0, abs=0.1)  # the user's


def test_image_to_audio_and_video_graph(comfy):
    world_clip_inputs(comfy)
    info = saved_clip(comfy, comfy.wait(comfy.submit(example_workflow("image_to_av"))))
    assert (info["width"], info["height"], info["num_frames"]) == (448, 256, 33) and info["audio_codec"] == "aac"


# Listens on ComfyUI's websocket while a graph runs; prints the live previews it was sent (node, image size)
PREVIEW_SCRIPT = r'''
import asyncio, io, json, struct, sys
import aiohttp
from PIL import Image

url, workflow_path = sys.argv[1:3]


async def main():
    previews = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId=preview-test") as ws:
            workflow = json.load(open(workflow_path))
            async with session.post(f"{url}/prompt", json={"prompt": workflow, "client_id": "preview-test"}) as r:
                prompt_id = (await r.json())["prompt_id"]
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    event, body = struct.unpack(">I", message.data[:4])[0], message.data[4:]
                    if event == 1:  # PREVIEW_IMAGE: image type, image
                        node, image = None, body[4:]
                    elif event == 4:  # PREVIEW_IMAGE_WITH_METADATA: length, json, image
                        length = struct.unpack(">I", body[:4])[0]
                        node, image = json.loads(body[4 : 4 + length]).get("node_id"), body[4 + length :]
                    else:
                        continue
                    previews.append({"node": node, "size": list(Image.open(io.BytesIO(image)).size)})
                elif message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if data["type"] in ("execution_success", "execution_error", "execution_interrupted") and \
                            data["data"].get("prompt_id") == prompt_id:
                        previews.append({"end": data["type"]})
                        break
    print(json.dumps(previews))


asyncio.run(main())
'''


def test_sampler_sends_live_previews(comfy, tmp_path):
    """ComfyUI (started with --preview-method auto) gets a Latent2RGB preview of the picture at each step."""
    workflow_path = tmp_path / "workflow.json"
    workflow = demo_workflow(steps=3, prompt="a blue light blinks")
    workflow_path.write_text(json.dumps(workflow))
    script = tmp_path / "previews.py"
    script.write_text(PREVIEW_SCRIPT)
    done = subprocess.run([COMFYUI_PYTHON, str(script), comfy.url, str(workflow_path)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    events = json.loads(done.stdout.strip().splitlines()[-1])
    assert events[-1] == {"end": "execution_success"}, events
    previews = [event for event in events[:-1] if event.get("node") in (None, "8")]
    # one pixel a latent (14x8 at 240p 16:9 on the demo grid), scaled up to ComfyUI's preview size
    assert len(previews) >= 3 and all(abs(e["size"][0] / e["size"][1] - 14 / 8) < 0.02 for e in previews), events


def test_interrupt_stops_the_sampler(comfy):
    prompt_id = comfy.submit(demo_workflow(steps=1000, prompt="a green lamp hums"))
    time.sleep(5)
    started = time.monotonic()
    comfy.request("/interrupt", {})
    entry = comfy.wait(prompt_id, timeout=60)
    assert time.monotonic() - started < 30, "the sampler did not stop soon after the interrupt"
    messages = [name for name, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in messages and "execution_success" not in messages, entry["status"]
    assert "12" not in entry.get("outputs", {})


# ComfyUI's own umT5 (the classes CLIPLoader builds for type "wan") on a tiny config: CLIPTextEncode's features
COMFY_UMT5_SCRIPT = r'''
import json, sys
from types import SimpleNamespace
import safetensors.torch, torch
import comfy.cli_args
comfy.cli_args.args.cpu = True  # what main.py --cpu sets, before model_management picks a device
import comfy.sd, comfy.sd1_clip, comfy.text_encoders.t5, comfy.text_encoders.wan as wan

checkpoint, sizes, prompt, out = sys.argv[1:5]
state_dict = safetensors.torch.load_file(checkpoint)
config = json.load(open("comfy/text_encoders/umt5_config_xxl.json")) | json.load(open(sizes))


class TinyUMT5(comfy.sd1_clip.SDClipModel):  # wan.UMT5XXlModel with the tiny config
    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):
        super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=config,
                         dtype=dtype, special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                         enable_attention_masks=True, zero_out_masked=True, model_options=model_options)


class Model(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, model_options=model_options, name="umt5xxl", clip_model=TinyUMT5)


target = SimpleNamespace(params={}, clip=Model, tokenizer=wan.WanT5Tokenizer)
clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": state_dict.pop("spiece_model")},
                     model_options={"dtype": torch.float32})
missing, unexpected = clip.load_sd(state_dict)
assert not missing and not unexpected, (missing, unexpected)
((features, extra),) = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
safetensors.torch.save_file({"features": features.float().contiguous()}, out)
'''


def test_clip_text_encode_with_comfyuis_umt5_equals_our_text_encoder(tmp_path):
    """The same tiny umT5 weights + sentencepiece model, saved in ComfyUI's single-file text-encoder layout
    (transformers' key names + ``spiece_model``): ComfyUI's umT5 (what CLIPLoader type wan builds) and
    CLIPTextEncode give the features of our TextEncoder, 512 positions, padding zeroed, so the mask the sampler
    reads off the zeros is ours."""
    import sentencepiece
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    from comfy_nodes import core
    from javis_core.codecs.text import UMT5_XXL_CONFIG, TextEncoder

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"a {c} {o} {v} in the {p}" for c in ("red", "green", "blue", "small", "loud")
                                for o in ("dog", "ball", "drum", "car") for v in ("barks", "rolls", "plays", "hums")
                                for p in ("park", "street", "room")))  # fmt: skip
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=60, hard_vocab_limit=False,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    # the same unigram model on our side (transformers' T5 tokenizer from the pieces and their scores)
    vocab = [(pieces.id_to_piece(i), pieces.get_score(i)) for i in range(pieces.get_piece_size())]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    config = {**UMT5_XXL_CONFIG, "vocab_size": len(vocab), "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
              "num_heads": 4}  # fmt: skip
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(**config)).eval()
    prompt = "a blue dog barks in the park"
    ours, mask = TextEncoder(model, tokenizer).encode([prompt])

    checkpoint = tmp_path / "umt5_tiny.safetensors"
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    weights["spiece_model"] = torch.frombuffer(bytearray((tmp_path / "spiece.model").read_bytes()), dtype=torch.uint8)
    save_file(weights, checkpoint)
    sizes = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
    (tmp_path / "sizes.json").write_text(json.dumps({name: config[name] for name in sizes}))
    out = tmp_path / "features.safetensors"
    subprocess.run([COMFYUI_PYTHON, "-c", COMFY_UMT5_SCRIPT, str(checkpoint), str(tmp_path / "sizes.json"), prompt,
                    str(out)], cwd=COMFYUI_DIR, check=True, timeout=300)  # fmt: skip
    comfy_features = load_file(out)["features"]
    assert comfy_features.shape == ours.shape == (1, 512, 32)
    torch.testing.assert_close(comfy_features, ours.float(), rtol=1e-4, atol=1e-4)
    _, read_mask = core.conditioning_features([[comfy_features, {}]], "positive", 32)
    assert torch.equal(read_mask, mask.long()) and 10 < int(mask.sum()) < 60


def test_comfyuis_wan_vae_file_decodes_our_latent_like_our_codec(wan_vae_file, tmp_path):
    """``vae/wan_2.1_vae.safetensors`` as ComfyUI's Load VAE reads it (full-size Wan2.1 layout, random weights):
    ComfyUI's VAE Decode of a LATENT equals our Wan codec loading the same file (the LATENT is the raw VAE space
    both use)."""
    import torch
    from safetensors.torch import load_file, save_file

    from comfy_nodes import core
    from javis_core.codecs.video import VideoCodec

    latent = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(1))  # 9 frames of 48x64
    save_file({"samples": latent}, tmp_path / "latent.safetensors")
    out = tmp_path / "images.safetensors"
    latent_file = tmp_path / "latent.safetensors"
    command = [COMFYUI_PYTHON, "-c", COMFY_WAN_VAE_DECODE_SCRIPT, str(wan_vae_file), str(latent_file), str(out)]
    subprocess.run(command, cwd=COMFYUI_DIR, check=True, timeout=600)
    comfy_images = load_file(out)["images"]
    wan_vae = VideoCodec.from_wan_original(wan_vae_file, torch_dtype=torch.float32).vae
    ours = core.RawVideoDecoder(wan_vae).decode(latent)
    ours = ((ours + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)  # (B, T, H, W, 3) in [0, 1], ComfyUI's IMAGE
    assert comfy_images.shape == ours.shape == (1, 9, 48, 64, 3) and ours.std() > 0.01
    torch.testing.assert_close(comfy_images, ours, rtol=2e-3, atol=2e-3)


# The demo transformer as our MODEL, loaded whole and then in part (ComfyUI's lowvram path), with a LoRA patch
COMFY_PARTIAL_LOAD_SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
import comfy.ops
from comfy_nodes import comfy_types, core

(encoder,) = core.load_text_encoder("demo")
prompts = core.encode_text(encoder, "a red ball bounces"), core.encode_text(encoder, "blurry")
latent = core.latents_for("t2av", 240, 426, 33, stride=32)
(model,) = core.load_model("demo")
patcher = comfy_types.model_patcher(model)
key = "diffusion_model.blocks.0.attn1.to_q.weight"
lora = torch.randn(192, 192, generator=torch.Generator().manual_seed(0)) * 0.05
patcher.add_patches({key: ("diff", (lora,))}, 1.0)
cpu, results = torch.device("cpu"), {}
for name, budget in (("whole", 0), ("part", patcher.model_size() // 3)):
    patcher.patch_model(cpu, lowvram_model_memory=budget)
    cast = sum(1 for m in model.modules() if getattr(m, "comfy_cast_weights", False))
    patched = bool(getattr(model.diffusion_model.blocks[0].attn1.to_q, "weight_function", []))
    (out,) = core.sample(model, *prompts, latent, seed=2, steps=2)
    results[name] = {"cast": cast, "lowvram": bool(model.model_lowvram), "patched_per_call": patched}
    torch.save(out, sys.argv[2] + f".{name}.pt")
    patcher.unpatch_model(cpu)
layers = sum(isinstance(m, comfy.ops.CastWeightBiasOp) for m in model.modules())
print(json.dumps({"layers": layers, **results}))
'''


def test_comfyui_partial_loading_gives_the_same_clip(tmp_path):
    """ComfyUI's low-VRAM path on our MODEL: with a third of the transformer as budget, ComfyUI loads it in part
    (the other layers cast per call, the LoRA patch applied per call) and the sampler's latents equal a whole load
    with the patch merged. On this CPU both devices are the same, so the transfers themselves are not exercised."""
    import torch

    out = tmp_path / "latents"
    done = subprocess.run([COMFYUI_PYTHON, "-c", COMFY_PARTIAL_LOAD_SCRIPT, str(REPO), str(out)], cwd=COMFYUI_DIR,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["layers"] > 20
    assert report["whole"] == {"cast": 0, "lowvram": False, "patched_per_call": False}
    assert report["part"]["lowvram"] and report["part"]["cast"] > 5, report
    whole, part = (torch.load(f"{out}.{name}.pt") for name in ("whole", "part"))
    torch.testing.assert_close(part["samples"], whole["samples"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part[core_audio_key()], whole[core_audio_key()], rtol=1e-5, atol=1e-5)


def core_audio_key() -> str:
    from comfy_nodes.latents import AUDIO_SAMPLES

    return AUDIO_SAMPLES


def test_cancel_stops_the_video_decode(comfy):
    """Cancel during VAE Decode of our VAE (the tiny pipeline's Wan2.1 VAE, checked before each latent frame)."""
    workflow = tiny_workflow(steps=1)
    workflow["7"]["inputs"].update(resolution="480p", duration=5.0)  # 21 latent frames of 60x108: a long decode
    workflow["12"]["inputs"]["filename_prefix"] = "javisdit_test/cancelled_decode"
    decodes_before = comfy.log.read_text(errors="replace").count("Requested to load RawVideoDecoder")
    prompt_id = comfy.submit(workflow)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while comfy.log.read_text(errors="replace").count("Requested to load RawVideoDecoder") == decodes_before:
        assert time.monotonic() < deadline, f"the decode did not start:\n{comfy.log_tail()}"
        time.sleep(0.2)
    time.sleep(1)
    started = time.monotonic()
    comfy.request("/interrupt", {})
    entry = comfy.wait(prompt_id, timeout=120)
    assert time.monotonic() - started < 60, "the decode did not stop soon after the interrupt"
    messages = {name: body for name, body in entry["status"]["messages"]}
    assert "execution_interrupted" in messages and "execution_success" not in messages, entry["status"]
    assert messages["execution_interrupted"]["node_id"] == "9"  # VAE Decode
