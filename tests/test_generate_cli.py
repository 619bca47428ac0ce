"""`python -m javis_core.generate` with the tiny pipeline: a browser-playable mp4, batch prompts, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from javis_core import generate
from javis_core.media import probe
from javis_core.tiny import save_tiny_pipeline

from .conftest import REPO


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


def test_cli_writes_h264_aac_mp4(tiny_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    cmd = [sys.executable, "-m", "javis_core.generate", "--prompt", "a red ball bounces and clicks",
           "--model", str(tiny_dir), "--duration", "2", "--resolution", "240p", "--aspect-ratio", "portrait",
           "--steps", "2", "--seed", "7", "--out", str(out), "--wav"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    info = probe(out)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio_codec"] == "aac"
    assert info["fps"] == 16 and info["num_frames"] == 33
    assert (info["width"], info["height"]) == (240, 432)  # portrait 240p: 426x240 requested, 432x240 decoded
    assert abs(info["audio_duration"] - info["video_duration"]) <= 1 / 16
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["prompt"] == "a red ball bounces and clicks" and settings["seed"] == 7
    assert out.with_suffix(".wav").stat().st_size == 44 + 2 * 33000


def test_prompt_file_is_numbered_and_resumable(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "bench.csv"
    prompts.write_text('id,text\n1,"rain on a tin roof"\n2,"a cat meows, then purrs"\n', encoding="utf-8")
    args = ["--prompts", str(prompts), "--model", str(tiny_dir), "--num-frames", "5", "--steps", "1",
            "--mode", "t2a", "--out-dir", str(tmp_path / "samples")]  # fmt: skip
    assert generate.main(args) == 0
    files = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert files == ["sample_0000.json", "sample_0000.wav", "sample_0001.json", "sample_0001.wav"]
    first = (tmp_path / "samples" / "sample_0000.wav").stat().st_mtime_ns
    capsys.readouterr()
    assert generate.main(args) == 0
    assert capsys.readouterr().out.count("exists, skipping") == 2
    assert (tmp_path / "samples" / "sample_0000.wav").stat().st_mtime_ns == first


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", "  "], "--prompt must be a non-empty string"),
        (["--prompt", "x", "--duration", "7"], "--duration must be between 2 and 5 seconds"),
        (["--prompt", "x", "--aspect-ratio", "5:4"], "--aspect-ratio must be one of"),
        (["--prompt", "x", "--steps", "0"], "--steps must be an integer from 1 to 1000"),
        (["--prompt", "x", "--guidance", "-2"], "--guidance must be a number from 0 to 50"),
        (["--prompt", "x", "--dtype", "fp8"], "dtype must be one of fp32, bf16, fp16"),
        (["--prompt", "x", "--attention", "fastest"], "attention backend must be one of"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, extra, message):
    # The model path does not exist: the settings are rejected before any weights are looked for.
    assert generate.main(extra + ["--model", str(tmp_path / "absent"), "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()


def test_missing_weights_say_what_to_do(tmp_path, capsys):
    args = ["--prompt", "x", "--model", str(tmp_path / "absent"), "--out", str(tmp_path / "x.mp4")]
    assert generate.main(args) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--model demo runs offline" in err
    (tmp_path / "csv.csv").write_text("caption\nhello\n")
    assert generate.main(["--prompts", str(tmp_path / "csv.csv"), "--model", "x"]) == 2
    assert "has no 'text' column" in capsys.readouterr().err


def test_unset_steps_and_length_follow_the_model():
    from javis_core.demo.model import DEMO_DURATION, DEMO_STEPS

    def resolved(*extra: str) -> tuple:
        args = generate.build_parser().parse_args(["--prompt", "x", *extra])
        generate.apply_model_defaults(args)
        return args.steps, args.duration, args.num_frames

    assert resolved() == (generate.DEFAULT_STEPS, None, None)  # the pipeline's own 4 s
    assert resolved("--model", "demo") == (DEMO_STEPS, DEMO_DURATION, None)
    assert resolved("--model", "demo", "--steps", "4", "--num-frames", "17") == (4, None, 17)


def test_preset_sets_steps_and_scheduler_unless_given():
    from javis_core.pipelines.speed import PRESETS

    def resolved(*extra: str) -> tuple:
        args = generate.build_parser().parse_args(["--prompt", "x", *extra])
        generate.apply_model_defaults(args)
        return args.steps, args.scheduler

    assert resolved("--preset", "exact") == (50, "euler")
    fast = PRESETS["fast"]
    assert resolved("--preset", "fast") == (fast.num_inference_steps, fast.scheduler)
    assert resolved("--preset", "fast", "--model", "demo") == (fast.num_inference_steps, fast.scheduler)
    assert resolved("--preset", "fastest", "--steps", "3", "--scheduler", "euler") == (3, "euler")


def test_cli_with_preset_compile_flags_and_attention(tiny_dir, tmp_path):
    out = tmp_path / "clip.wav"
    args = ["--prompt", "x", "--model", str(tiny_dir), "--num-frames", "5", "--mode", "t2a", "--preset", "fastest",
            "--steps", "3", "--attention", "native", "--group-offload", "--out", str(out)]  # fmt: skip
    assert generate.main(args) == 0
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["preset"] == "fastest" and settings["attention"] == "native" and settings["scheduler"] == "unipc"
    assert out.stat().st_size == 44 + 2 * 5000


def test_ctrl_c_is_one_line_saying_a_rerun_goes_on(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "run", interrupted)
    assert generate.main(["--prompts", str(tmp_path / "p.txt"), "--model", "demo"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("stopped") and "run the same command again" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
