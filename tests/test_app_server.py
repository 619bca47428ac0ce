"""The studio as a shared server: real gradio_client clients, in threads and in a process that is killed, against
the app served on 127.0.0.1 with a tiny random pipeline. Clients are told apart by the address uvicorn reads from
X-Forwarded-For (which it trusts from 127.0.0.1, as from a proxy on the same machine)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from javis_core.studio.server import MARKER, OutputStore, without_server_paths
from javis_core.studio.session import GenerationSettings, ModelConfig, ModelManager, Studio
from javis_core.tiny import save_tiny_pipeline


class Steps:
    """A forward hook on the served transformer: counts denoising forwards and holds each one until released."""

    def __init__(self):
        self.count, self.release, self._cond = 0, threading.Event(), threading.Condition()
        self.release.set()

    def __call__(self, *_):
        with self._cond:
            self.count += 1
            self._cond.notify_all()
        self.release.wait(timeout=60)

    def wait_for(self, count: int, timeout: float = 60) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(*argv: str):
    port = _free_port()
    args = app.build_parser().parse_args([*argv, "--device", "cpu", "--port", str(port)])
    studio = app.create_studio(args)
    demo = app.build_demo(studio)
    app.launch(demo, studio, args, prevent_thread_lock=True, quiet=True)
    return demo, studio, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("server") / "tiny")


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """One visitor may have one generation running or waiting, one may wait in all; uploads up to 1 MB."""
    out = tmp_path_factory.mktemp("results")
    demo, studio, url = serve("--model", str(tiny_dir), "--output-dir", str(out), "--jobs-per-client", "1",
                              "--queue-size", "1", "--max-upload-mb", "1")  # fmt: skip
    steps = Steps()
    hook = studio.models.get().transformer.register_forward_hook(steps)
    yield demo, studio, url, steps
    steps.release.set()
    hook.remove()
    demo.close()


def client(url: str, address: str) -> Client:
    return Client(url, verbose=False, headers={"X-Forwarded-For": address})


def request(steps: int = 2, **changes) -> dict:
    """A cheap /generate request (audio only, 2 s); one denoising step is one transformer forward."""
    return dict(prompt="rain on a tin roof", mode="t2a", duration=2, steps=steps, seed=1, randomize_seed=False,
                api_name="/generate") | changes  # fmt: skip


def wait_until(condition, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_one_client_cannot_hold_the_line_and_cancel_always_gets_through(server):
    demo, studio, url, steps = server
    a, b, c = (client(url, f"10.0.0.{i}") for i in (1, 2, 3))
    steps.release.clear()
    start = steps.count
    job_a = a.submit(**request(steps=50))
    assert steps.wait_for(start + 1)
    with pytest.raises(AppError, match="You already have 1 generation running or waiting"):
        a.predict(**request())  # the same client again: turned away at once, not queued behind its own job
    job_b = b.submit(**request(steps=1))
    assert wait_until(lambda: studio.gate.load() == 2)
    with pytest.raises(AppError, match="The studio is busy"):
        c.predict(**request())  # the line is full: a message now, not a wait of minutes or an HTTP 503
    at_cancel = steps.count
    a.predict(api_name="/cancel")  # with the line full, Cancel still reaches a's running job
    steps.release.set()
    assert Path(job_b.result(timeout=60)[1]).suffix == ".wav"  # b's turn came as soon as a's job stopped
    assert steps.count == at_cancel + 1  # a stopped after the step it was in; b ran its one step
    assert wait_until(lambda: studio.gate.load() == 0)
    job_a.result(timeout=30)  # ends without an error (the page shows a notice, the result on show stays)


def test_a_cancelled_or_vanished_client_stops_its_generation(server, tiny_dir):
    demo, studio, url, steps = server
    a = client(url, "10.0.1.1")
    steps.release.clear()
    start = steps.count
    job = a.submit(**request(steps=50))
    assert steps.wait_for(start + 1)
    job.cancel()  # gradio_client's cancel: the job stops after the current step
    at_cancel = steps.count
    steps.release.set()
    assert wait_until(lambda: studio.gate.load() == 0, timeout=30)
    time.sleep(1)
    assert steps.count <= at_cancel + 1

    # a client process killed in the middle of its generation
    steps.release.clear()
    start = steps.count
    script = ("import sys; from gradio_client import Client; Client(sys.argv[1], verbose=False).predict("
              "'rain', mode='t2a', duration=2, steps=50, api_name='/generate')")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert steps.wait_for(start + 1, timeout=120)
    finally:
        process.kill()
        process.wait()
    at_kill = steps.count
    steps.release.set()
    assert wait_until(lambda: studio.gate.load() == 0, timeout=30)
    assert steps.count <= at_kill + 2  # the step in flight, and one more while the server notices
    assert start + 50 > steps.count


def test_results_are_stored_once_and_uploads_are_bounded(server):
    demo, studio, url, steps = server
    api = Client(url, verbose=False, download_files=False)  # the server's own file references
    video, audio, download, settings, seed = api.predict(**request(mode="t2av", steps=1))
    video = video.get("video") or video  # a Video's value, or its file itself
    path = Path(video["path"])
    assert studio.output_root.resolve() in path.resolve().parents  # served where it was written, not copied
    assert Path(demo.GRADIO_CACHE).resolve() not in path.resolve().parents and str(path) in video["url"]
    assert httpx.get(video["url"]).content == path.read_bytes()
    upload = httpx.post(url + "gradio_api/upload", files={"files": ("big.bin", b"0" * 2_000_000)})
    assert upload.status_code == 413  # --max-upload-mb 1
    assert httpx.post(url + "gradio_api/upload", files={"files": ("small.bin", b"0" * 1000)}).status_code == 200
    # no event reads the result players back from the client (the gallery is made from the server's own state)
    players = {"result-video", "result-audio", "download"}
    for fn in demo.fns.values():
        assert not players & {getattr(block, "elem_id", None) for block in fn.inputs}, fn.name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"negative_prompt": "blurry " * 150_000}, "Negative prompt is too long \\(1050000 characters; at most 2000"),
        ({"duration": "long"}, "(?s)slider.*Expected a `float`, but the value passed .* was: 'long'"),  # Gradio's check
        # the sliders' ranges (Gradio checks them first) are the studio's limits (UI_LIMITS), as in its messages
        ({"duration": 9}, "Value 9 is greater than maximum value 5"),
        ({"steps": 150}, "Value 150 is greater than maximum value 100"),
        ({"guidance": 20}, "Value 20 is greater than maximum value 15"),
        ({"steps": 2.5}, "Steps must be an integer from 1 to 100 \\(got 2.5\\)"),
        ({"mode": "t2x"}, "(?i)t2x.*choices|Mode must be one of"),
    ],
)
def test_wrong_api_input_gets_a_message(server, changes, message):
    demo, studio, url, steps = server
    with pytest.raises(AppError, match=message):
        client(url, "10.0.3.1").predict(**request() | changes)


def test_output_folder_is_bounded_across_restarts(tiny_dir, tmp_path):
    out = tmp_path / "out"
    studio = Studio(ModelManager(ModelConfig(model=str(tiny_dir), device="cpu")), out, keep_bytes=150_000)
    settings = GenerationSettings.from_ui("a bell rings", None, "t2a", 2, "240p", "landscape", 5, 5, True, 1, 0, 1)
    results = [studio.generate(settings, f"api-client-{i}") for i in range(3)]  # three sessions nobody closes
    kept = [p for p in out.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in kept) <= 150_000
    assert results[-1].audio.exists() and not results[0].audio.exists()  # the oldest went first
    # after a restart: what is older than the age bound goes at start-up
    old = results[-1].audio
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert OutputStore(out, 10**9, 86400).prune() == [old]
    assert (out / MARKER).exists()


def test_output_dir_must_be_the_studios_own(tmp_path, tiny_dir):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config").write_text("secret")
    with pytest.raises(SystemExit, match="already holds other files"):
        app.main(["--model", str(tiny_dir), "--output-dir", str(tmp_path / "project")])


def test_serving_beyond_localhost_warns_and_auth_works(tiny_dir, tmp_path, caplog):
    assert not app.served_beyond_this_machine("127.0.0.1", False) and not app.served_beyond_this_machine(None, False)
    assert app.served_beyond_this_machine("0.0.0.0", False) and app.served_beyond_this_machine(None, True)
    with caplog.at_level(logging.WARNING, logger="javis_studio"):
        demo, studio, url = serve("--model", str(tiny_dir), "--output-dir", str(tmp_path / "a"), "--host", "0.0.0.0",
                                  "--auth", "ann:secret")  # fmt: skip
    try:
        assert "without a login" not in caplog.text
        with pytest.raises(Exception, match="(?i)login|auth|401|403"):
            Client(url, verbose=False)
        assert Client(url, auth=("ann", "secret"), verbose=False).view_api(print_info=False, return_format="dict")
    finally:
        demo.close()
    with caplog.at_level(logging.WARNING, logger="javis_studio"):
        demo, studio, url = serve("--model", str(tiny_dir), "--output-dir", str(tmp_path / "b"), "--host", "0.0.0.0")
    demo.close()
    assert "without a login" in caplog.text and "--auth USER:PASSWORD" in caplog.text


def test_messages_do_not_show_server_paths(tmp_path):
    message = f"Could not load the model. {tmp_path / 'weights' / 'model.safetensors'} does not exist."
    assert without_server_paths(message) == "Could not load the model. model.safetensors does not exist."
    placeholder = "download it, then pass --model /path/to/dir"
    assert without_server_paths(placeholder) == placeholder
