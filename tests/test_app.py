"""The Gradio studio (app.py): settings validation, missing weights, errors, cancel, history, and its API
called with gradio_client against the app served on 127.0.0.1 with a tiny random pipeline."""

from __future__ import annotations

import asyncio
import socket
import threading
import wave
from pathlib import Path

import gradio as gr
import huggingface_hub.constants
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import app
from javis_core.studio.session import (
    GenerationCancelled,
    GenerationSettings,
    ModelConfig,
    ModelManager,
    Studio,
    StudioError,
    aspect_choices,
    estimate_gpu_seconds,
)
from javis_core.media import probe
from javis_core.codecs.text import DEFAULT_NEGATIVE_PROMPT
from javis_core.tiny import save_tiny_pipeline

# prompt, negative, mode, duration, resolution, aspect, guidance, audio guidance, linked, steps, shift, seed, random
UI_DEFAULTS = ("a dog barks at a passing train", DEFAULT_NEGATIVE_PROMPT, "t2av", 2, "240p", "portrait", 5.0, 5.0,
               True, 2, 0, 7, False)  # fmt: skip
FIELDS = ("prompt", "negative_prompt", "mode", "duration", "resolution", "aspect_ratio", "guidance_scale",
          "audio_guidance_scale", "link_guidance", "num_inference_steps", "shift", "seed",
          "randomize_seed")  # fmt: skip


def ui_values(**changes) -> list:
    values = dict(zip(FIELDS, UI_DEFAULTS)) | changes
    return [values[name] for name in FIELDS]


def run_generate(handlers: dict, *values, **state):
    """The page's (async) Generate handler called as Gradio calls it; ``state``: model / history."""
    return asyncio.run(handlers["generate"](*values, **state))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("app") / "tiny")


@pytest.fixture(scope="module")
def studio(tiny_dir, tmp_path_factory) -> Studio:
    return Studio(ModelManager(ModelConfig(model=str(tiny_dir), device="cpu")), tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def handlers(studio) -> dict:
    return app.build_demo(studio).handlers


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and an empty cache: hub ids fail at once, as on a machine without the weights."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


# ------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"prompt": "   "}, "Prompt is empty"),
        ({"prompt": "x" * 2001}, "Prompt is too long"),
        ({"mode": "t2x"}, "Mode must be one of t2av, t2a, t2v"),
        ({"duration": 7}, "Duration (s) must be a number from 2 to 5"),
        ({"resolution": "720p"}, "Resolution must be one of 240p, 360p, 480p"),
        ({"aspect_ratio": "wide"}, "Aspect ratio must be one of landscape, portrait, square"),
        ({"guidance_scale": -1}, "Guidance (video) must be a number from 0 to 15"),
        ({"link_guidance": False, "audio_guidance_scale": 16}, "Guidance (audio) must be a number from 0 to 15"),
        ({"num_inference_steps": 2.5}, "Steps must be an integer from 1 to 100"),
        ({"num_inference_steps": 101}, "Steps must be an integer from 1 to 100"),
        ({"num_inference_steps": "many"}, "Steps must be an integer"),
        ({"shift": -2}, "Shift must be a number above 0"),
        ({"seed": -1}, "Seed must be an integer from 0 to 4294967295"),
        ({"negative_prompt": "x" * 2001}, "Negative prompt is too long"),
        ({"prompt": 12}, "Prompt is empty"),
    ],
)
def test_bad_settings_name_the_control(changes, field):
    with pytest.raises(StudioError) as error:
        GenerationSettings.from_ui(*ui_values(**changes))
    assert field in str(error.value)


def test_settings_defaults_and_linking():
    settings = GenerationSettings.from_ui(*ui_values(guidance_scale=7.5, audio_guidance_scale=2.0, shift=0))
    assert settings.audio_guidance_scale == 7.5  # linked: the audio scale follows the video scale
    assert settings.shift is None and settings.negative_prompt is None  # automatic shift, mode's default negative
    assert settings.num_frames == 33 and settings.size == (426, 240)
    unlinked = GenerationSettings.from_ui(*ui_values(link_guidance=False, audio_guidance_scale=2.0, shift=3,
                                                     negative_prompt="blurry"))  # fmt: skip
    assert (unlinked.audio_guidance_scale, unlinked.shift, unlinked.negative_prompt) == (2.0, 3.0, "blurry")
    assert "--audio-guidance 2 --shift 3 --negative-prompt blurry" in unlinked.cli_command(ModelConfig())
    seeds = {GenerationSettings.from_ui(*ui_values(randomize_seed=True)).seed for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


def test_preset_flag_sets_starting_steps_and_the_command(tmp_path):
    from javis_core.pipelines.speed import PRESETS

    config = ModelConfig(model=str(tmp_path / "absent"), device="cpu", preset="fast")
    assert ModelManager(config, full_present=True).defaults()["steps"] == PRESETS["fast"].num_inference_steps
    assert ModelManager(ModelConfig(device="cpu"), full_present=True).defaults()["steps"] == 50
    settings = GenerationSettings.from_ui(*ui_values())
    assert "--preset fast" in settings.cli_command(config)
    assert "--preset" not in settings.cli_command(ModelConfig(device="cpu"))


def test_aspect_choices_show_width_by_height():
    # the size the file will have: the official size rounded up to the latent grid (16 pixels for Wan's VAE)
    choices = {value: label for label, value in aspect_choices("480p")}
    assert choices["portrait"] == "Portrait · 480×864" and choices["landscape"] == "Landscape · 864×480"
    assert choices["1:2"] == "2:1 · 912×464" and len(choices) == 17
    demo = {value: label for label, value in aspect_choices("240p", spatial_stride=32)}  # the demo model's codec
    assert demo["landscape"] == "Landscape · 448×256"


# ------------------------------------------------------------------------------------------- handlers
def test_bad_input_is_a_gr_error_before_loading(tmp_path):
    studio = Studio(ModelManager(ModelConfig(model=str(tmp_path / "absent"), device="cpu")), tmp_path)
    handlers = app.build_demo(studio).handlers
    with pytest.raises(gr.Error, match="Duration \\(s\\) must be a number from 2 to 5"):
        run_generate(handlers, *ui_values(duration=9))
    # the page checks first, in an event without outputs, so the error does not cover the result on show
    with pytest.raises(gr.Error, match="Duration \\(s\\) must be a number from 2 to 5"):
        handlers["check"](*ui_values(duration=9))
    with pytest.raises(gr.Error, match="Prompt is empty"):
        handlers["check"](*ui_values(prompt="  "))
    assert handlers["check"](*ui_values()) is None
    assert not studio.models.loaded and "loads on the first Generate" in studio.models.status_markdown()


def test_missing_local_weights_say_what_and_how(tmp_path):
    studio = Studio(ModelManager(ModelConfig(model=str(tmp_path / "absent"), device="cpu")), tmp_path)
    handlers = app.build_demo(studio).handlers
    for _ in range(2):  # the failure is remembered for the status line, and the next click tries again
        with pytest.raises(gr.Error) as error:
            run_generate(handlers, *ui_values())
        assert "absent does not exist" in error.value.message and "--model" in error.value.message
        assert str(tmp_path) not in error.value.message  # the file's name, not where the server keeps it
        assert "Traceback" not in error.value.message
    assert "not loaded" in studio.models.status_markdown()


def test_missing_hub_weights_say_how_to_download(tmp_path, offline_hub):
    studio = Studio(ModelManager(ModelConfig(device="cpu")), tmp_path)
    with pytest.raises(gr.Error) as error:
        run_generate(app.build_demo(studio).handlers, *ui_values())
    assert "hf download JavisVerse/JavisDiT-v1.0-jav" in error.value.message
    assert "--model /path/to/dir" in error.value.message
    assert "<br>then pass that directory" in error.value.message


def test_audio_only_writes_a_reproducible_wav(handlers, studio):
    noises = []  # the audio latents of the first step: the seed's noise
    hook = studio.models.get().transformer.register_forward_pre_hook(
        lambda module, args, kwargs: noises.append(kwargs["audio_hidden_states"][0].clone()), with_kwargs=True
    )
    try:
        video, audio, download, settings, seed, _ = run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=3,
                                                                                 seed=11))  # fmt: skip
        again = run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=3, seed=11))
        other = run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=3, seed=12))
    finally:
        hook.remove()
    assert video is None and download == audio and seed == 11 and audio.endswith(".wav")
    with wave.open(audio) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (16000, 1, 33000)  # 33 frames/16 fps
    assert settings["mode"] == "t2a" and settings["seed"] == 11 and settings["num_inference_steps"] == 3
    assert settings["height"] is None and settings["shift_automatic"] and settings["shift"] > 0
    assert "--mode t2a" in settings["command"] and "--seed 11" in settings["command"]
    assert Path(audio).with_suffix(".json").exists()
    assert torch.equal(noises[0], noises[3]) and not torch.equal(noises[0], noises[6])  # 3 steps per run
    assert again[1] != audio and Path(audio).exists() and other[4] == 12  # a new file: earlier results stay


def test_out_of_memory_is_readable_and_the_app_recovers(handlers, studio):
    def exhausted(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    transformer = studio.models.get().transformer
    hook = transformer.register_forward_pre_hook(exhausted, with_kwargs=True)
    try:
        with pytest.raises(gr.Error) as error:
            run_generate(handlers, *ui_values(mode="t2a"))
    finally:
        hook.remove()
    assert error.value.message.startswith("Out of memory on cpu at 240×426, 2 s.")
    assert "--offload" in error.value.message
    assert run_generate(handlers, *ui_values(mode="t2a"))[1].endswith(".wav")


def test_cancel_stops_after_the_current_step(handlers, studio):
    calls, second_step, cancelled = [], threading.Event(), threading.Event()

    def count_and_hold(*_):  # holds the second step until Cancel was pressed, so the race is decided
        calls.append(1)
        if len(calls) == 2:
            second_step.set()
            cancelled.wait(timeout=30)

    hook = studio.models.get().transformer.register_forward_hook(count_and_hold)
    outcome = {}

    def run():
        outcome["result"] = run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=100))

    worker = threading.Thread(target=run)
    try:
        worker.start()
        assert second_step.wait(timeout=60)
        handlers["cancel"]()
        cancelled.set()
        worker.join(timeout=60)
    finally:
        hook.remove()
    assert not worker.is_alive()
    # not an error: the outputs (and the result on show) stay as they were, a notice says it was cancelled
    assert outcome["result"] == (gr.skip(),) * 6
    assert len(calls) == 2  # stopped right after the step that was running
    assert not studio.cancel("default")  # nothing left running


def test_cancelled_generation_writes_nothing(studio):
    settings = GenerationSettings.from_ui(*ui_values(mode="t2a", num_inference_steps=50))
    before = set(studio.output_root.rglob("*"))

    def cancel_at_second_step(done, total, what):
        if done == 2:
            studio.cancel("s1")

    with pytest.raises(GenerationCancelled):
        studio.generate(settings, "s1", cancel_at_second_step)
    assert set(studio.output_root.rglob("*")) == before


def test_history_keeps_every_result(handlers):
    first = run_generate(handlers, *ui_values(num_inference_steps=1, seed=1), history=[])
    second = run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=1, seed=2), history=first[5])
    history = second[5]
    assert [entry["settings"]["seed"] for entry in history] == [1, 2]
    gallery, files = handlers["history"](history)
    assert files == [first[0], first[1], second[1]] and len(gallery) == 1 and gallery[0][1].endswith("· seed 1")
    with Image.open(gallery[0][0]) as thumbnail:  # made by the server from its own result
        assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 320
    shown = handlers["show"](history, gr.SelectData(None, {"index": 0, "value": None}))
    assert shown == (first[0], first[1], first[0], first[3])  # back in the player, with its settings


def test_spaces_gpu_decorator_gets_a_duration_estimate(monkeypatch, studio):
    seen = {}

    class FakeSpaces:  # the `spaces` package's decorator interface
        @staticmethod
        def GPU(duration):
            def wrap(fn):
                seen["duration"], seen["fn"] = duration, fn
                return fn

            return wrap

    monkeypatch.setattr(app, "spaces", FakeSpaces)
    handlers = app.build_demo(studio).handlers
    assert seen["fn"].__name__ == "run_job"  # the work itself, in the worker thread the handler starts
    settings = GenerationSettings.from_ui(*ui_values(num_inference_steps=10))
    longer = GenerationSettings.from_ui(*ui_values(resolution="480p", duration=5, num_inference_steps=50))
    assert 60 <= seen["duration"](settings, "s", "c", None, None, None) < seen["duration"](longer) <= 300
    assert estimate_gpu_seconds(50, "240p", 4) < estimate_gpu_seconds(50, "360p", 4)
    assert run_generate(handlers, *ui_values(mode="t2a", num_inference_steps=1))[1].endswith(".wav")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dtype", "fp8"], "dtype must be one of fp32, bf16, fp16"),
        (["--device", "gpu0"], "--device must look like cuda"),
    ],
)
def test_bad_start_up_flags_stop_with_a_message(flags, message):
    with pytest.raises(SystemExit, match=message):
        app.main([*flags, "--model", "unused"])


# ------------------------------------------------------------------------------------------- API
def _serve(*argv: str):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = app.build_parser().parse_args([*argv, "--device", "cpu", "--port", str(port)])
    studio = app.create_studio(args)
    demo = app.build_demo(studio)
    app.launch(demo, studio, args, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


def test_gradio_client_generates_a_sounding_mp4(tiny_dir, tmp_path):
    demo, url = _serve("--model", str(tiny_dir), "--output-dir", str(tmp_path))
    try:
        client = Client(url, verbose=False)
        assert {"/generate", "/cancel"} <= set(
            client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        )
        video, audio, download, settings, seed = client.predict(
            "rain drums on a tin roof", mode="t2av", duration=2, resolution="240p", aspect_ratio="portrait",
            steps=2, seed=5, randomize_seed=False, api_name="/generate",
        )  # fmt: skip
        video_path = video["video"] if isinstance(video, dict) else video
        info = probe(video_path)
        assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
        assert (info["width"], info["num_frames"], info["fps"]) == (240, 33, 16.0)
        assert abs(info["audio_duration"] - 33 / 16) < 0.05
        assert Path(download).suffix == ".mp4" and Path(download).stat().st_size == Path(video_path).stat().st_size
        with wave.open(audio) as wav:
            assert wav.getnframes() == 33000
        assert seed == 5 and settings["seed"] == 5 and settings["aspect_ratio"] == "portrait"
        assert (settings["width"], settings["height"], settings["num_frames"]) == (240, info["height"], 33)
        assert settings["model"] == str(tiny_dir) and settings["dtype"] == "float32"

        with pytest.raises(AppError, match="Prompt is empty"):
            client.predict("", api_name="/generate")
    finally:
        demo.close()


def test_api_keeps_serving_without_weights(tmp_path):
    demo, url = _serve("--model", str(tmp_path / "no_weights_here"), "--no-demo")  # else the demo model answers
    try:
        client = Client(url, verbose=False)
        for _ in range(2):
            with pytest.raises(AppError, match="no_weights_here does not exist"):
                client.predict("a cat meows", api_name="/generate")
    finally:
        demo.close()


def test_waiting_is_reported_only_behind_another_generation(studio):
    settings = GenerationSettings.from_ui(*ui_values(mode="t2a", num_inference_steps=1))
    alone = []
    studio.generate(settings, "alone", lambda done, total, what: alone.append(what))
    assert not any("Waiting" in what for what in alone)  # the first generation does not wait for anything
    first_running, release, behind = threading.Event(), threading.Event(), []

    def hold(*_):
        first_running.set()
        release.wait(timeout=30)

    hook = studio.models.get().transformer.register_forward_hook(hold)
    first = threading.Thread(target=studio.generate, args=(settings, "first"))
    try:
        first.start()
        assert first_running.wait(timeout=30)
        second = threading.Thread(target=studio.generate, args=(settings, "second"),
                                  kwargs={"on_progress": lambda done, total, what: behind.append(what)})  # fmt: skip
        second.start()
        assert wait_for(lambda: behind)
    finally:
        release.set()
        hook.remove()
    first.join(timeout=60)
    second.join(timeout=60)
    assert behind[0] == "Waiting for 1 earlier generation" and "Denoising" not in behind[0]


def test_a_leaving_visitor_stops_its_job_and_its_folder_goes_after_it(studio):
    settings = GenerationSettings.from_ui(*ui_values(mode="t2a", num_inference_steps=50))
    studio.generate(GenerationSettings.from_ui(*ui_values(mode="t2a", num_inference_steps=1)), "leaver")
    folder = studio.session_dir("leaver")
    assert any(folder.iterdir())  # an earlier result
    step, release, outcome = threading.Event(), threading.Event(), {}

    def hold(*_):
        step.set()
        release.wait(timeout=30)

    def run():
        try:
            studio.generate(settings, "leaver")
        except Exception as error:  # noqa: BLE001  # what the job ended with
            outcome["error"] = error

    hook = studio.models.get().transformer.register_forward_hook(hold)
    worker = threading.Thread(target=run)
    try:
        worker.start()
        assert step.wait(timeout=30)
        studio.forget_session("leaver")  # the page was closed (Gradio's unload)
        assert folder.exists()  # not deleted under the running job
    finally:
        release.set()
        hook.remove()
    worker.join(timeout=60)
    assert isinstance(outcome["error"], GenerationCancelled) and not folder.exists()


def wait_for(condition, timeout: float = 30) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False
