"""`python -m javis_core.generate` with --video-in / --audio-in / --image-in / --strength / --extend-to."""

from __future__ import annotations

import numpy as np
import pytest

from javis_core import generate
from javis_core.media import probe, read_video, write_video, write_wav
from javis_core.tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    frames = np.zeros((9, 240, 320, 3), np.uint8)
    frames[:, 60:180, 100:220] = np.linspace(40, 220, 9, dtype=np.uint8)[:, None, None, None]
    sound = (0.3 * np.sin(2 * np.pi * 220 * np.arange(9000) / 16000)).astype(np.float32)
    write_video(folder / "in.mp4", frames, fps=16)
    write_wav(folder / "in.wav", sound, 16000)
    return folder


def test_video_in_keeps_the_picture_and_reports(tiny_dir, clip, tmp_path, capsys):
    out = tmp_path / "with_sound.mp4"
    args = ["--prompt", "a lamp hums", "--model", str(tiny_dir), "--steps", "1", "--video-in", str(clip / "in.mp4"),
            "--out", str(out)]  # fmt: skip
    assert generate.main(args) == 0
    printed = capsys.readouterr().out
    assert "video: resized from 320x240 to" in printed and "clip length follows the input: 9 frames" in printed
    info = probe(out)
    assert info["num_frames"] == 9 and info["audio_codec"] == "aac"
    assert (info["width"], info["height"]) == (368, 288)  # 240p at the input's H:W 3:4 (276x368, decoded 288x368)
    frames, sound, _ = read_video(out)
    assert sound.std() > 1e-3
    source, _, _ = read_video(clip / "in.mp4")
    # the centre of the user's picture survives (up to H.264 twice), not a tiny random VAE's decoding of it
    assert abs(float(frames[:, 144, 184].mean()) - float(source[:, 120, 160].mean())) < 8


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--video-in", "{missing}"], "--video-in: file {missing} does not exist (accepted: a video file"),
        (["--audio-in", "{clip}/in.mp4"], "--audio-in: {clip}/in.mp4 has no audio stream; accepted: a sound file"),
        (["--video-in", "{clip}/in.wav"], "--video-in: {clip}/in.wav has no video stream"),
        (["--image-in", "{clip}/in.wav"], "--image-in: cannot read {clip}/in.wav as a picture"),
        (["--audio-in", "{clip}/in.wav", "--mode", "t2v"], "--video-in and --audio-in need --mode t2av"),
        (["--video-in", "{clip}/in.mp4", "--strength", "2"], "--strength must be from 0 (kept exactly) to 1"),
        (["--audio-in", "{clip}/in.wav", "--extend-to", "8"], "--extend-to continues a clip"),
    ],
)
def test_bad_media_is_one_clear_line_before_loading(clip, tmp_path, capsys, extra, message):
    fill = {"missing": str(tmp_path / "nope.mp4"), "clip": str(clip)}
    extra = [part.format(**fill) for part in extra]
    args = ["--prompt", "x", "--model", str(tmp_path / "absent"), "--out", str(tmp_path / "x.mp4"), *extra]
    assert generate.main(args) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and "Traceback" not in err
    assert not (tmp_path / "x.mp4").exists()
