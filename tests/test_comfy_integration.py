"""Opt-in: the node pack inside a real, headless ComfyUI on the CPU, driven over its HTTP API.

ComfyUI is not on the package registries, so this runs only when COMFYUI_DIR points at a ComfyUI checkout
(and COMFYUI_PYTHON, optionally, at the Python of a venv with ComfyUI's and this project's requirements);
otherwise every test here is skipped with that reason, in CI too. The pack is loaded through
``--extra-model-paths-config`` (custom_nodes -> a temp dir linking comfy_nodes/; javisdit -> a temp models
folder holding the tiny random pipeline), so nothing is written into the ComfyUI checkout.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from comfy_nodes.specs import NODE_SPECS
from javis_core.media import probe
from javis_core.tiny import save_tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "comfy_nodes" / "example_workflows" / "javisdit_t2av_api.json"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
STARTUP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 300

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory) -> Comfy:
    root = tmp_path_factory.mktemp("comfyui")
    custom_nodes = root / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / "javisdit").symlink_to(REPO / "comfy_nodes", target_is_directory=True)
    save_tiny_pipeline(root / "models" / "javisdit" / "tiny")
    config = root / "extra_model_paths.yaml"
    config.write_text(f"javisdit_test:\n  custom_nodes: {custom_nodes}\n  javisdit: {root / 'models' / 'javisdit'}\n")
    dirs = {name: root / name for name in ("output", "input", "temp", "user")}
    for path in dirs.values():
        path.mkdir()
    port = _free_port()
    command = [
        COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--extra-model-paths-config", str(config), "--database-url", "sqlite:///:memory:",
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


def tiny_workflow(steps: int = 3) -> dict:
    """The example workflow on the tiny pipeline (picked from the javisdit model folder), 64x96, 17 frames."""
    workflow = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    for node_id, source in (("1", "model"), ("2", "text_encoder"), ("3", "vae"), ("4", "audio_vae")):
        workflow[node_id]["inputs"][source] = "tiny"
    workflow["1"]["inputs"]["dtype"] = workflow["2"]["inputs"]["dtype"] = "fp32"
    workflow["6"]["inputs"].update(resolution="custom", width=96, height=64, num_frames=17)
    workflow["7"]["inputs"]["steps"] = steps
    workflow["11"]["inputs"]["filename_prefix"] = "javisdit_test/clip"
    return workflow


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
            if p.type == "COMBO":  # model dropdowns list the server's model folder, then the hub id
                expected = [*options["options"][:-1], p.default] if callable(p.options) else p.choices()
                assert options["options"] == expected and options["default"] == p.default
            else:
                assert kind == p.type
                if p.is_widget:
                    assert options.get("default") == p.default
        assert node["output"] == [o.type for o in spec.outputs]
        assert node["output_name"] == [o.name for o in spec.outputs]


def test_model_folder_lists_the_tiny_pipeline(comfy):
    _, info = comfy.request("/object_info/JavisDiTModelLoader")
    options = info["JavisDiTModelLoader"]["input"]["required"]["model"][1]["options"]
    assert options == ["tiny", "JavisVerse/JavisDiT-v1.0-jav"]


def test_text_to_sounding_video_workflow_saves_an_mp4_with_sound(comfy):
    entry = comfy.wait(comfy.submit(tiny_workflow()))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000] + comfy.log_tail()
    saved = entry["outputs"]["11"]["images"]
    assert len(saved) == 1
    path = comfy.output / saved[0]["subfolder"] / saved[0]["filename"]
    info = probe(path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"], info["num_frames"]) == (96, 64, 17)
    assert info["fps"] == pytest.approx(16)
    assert info["audio_duration"] == pytest.approx(17 / 16, abs=0.1)


def test_invalid_input_is_refused_naming_the_node(comfy):
    workflow = tiny_workflow()
    workflow["6"]["inputs"]["duration"] = 9.0  # beyond the 5 s maximum
    status, body = comfy.request("/prompt", {"prompt": workflow, "client_id": "javisdit-test"})
    assert status == 400
    assert "6" in body["node_errors"] and "duration" in json.dumps(body["node_errors"]["6"])


def test_interrupt_stops_the_sampler(comfy):
    workflow = tiny_workflow(steps=1000)
    workflow["6"]["inputs"].update(resolution="240p", num_frames=81)  # slow enough steps to interrupt midway
    prompt_id = comfy.submit(workflow)
    time.sleep(3)
    started = time.monotonic()
    comfy.request("/interrupt", {})
    entry = comfy.wait(prompt_id, timeout=60)
    assert time.monotonic() - started < 30, "the sampler did not stop soon after the interrupt"
    messages = [name for name, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in messages and "execution_success" not in messages, entry["status"]
    assert "11" not in entry.get("outputs", {})
