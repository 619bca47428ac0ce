"""JavisDiTPipeline on the tiny random pipeline: modes, options, callbacks, interruption and input validation."""

from __future__ import annotations

import pytest
import torch

from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.tiny import save_tiny_pipeline

SMALL = dict(height=64, width=96, num_frames=9, num_inference_steps=2)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


@pytest.fixture(scope="module")
def pipe(tiny_dir):
    pipe = JavisDiTPipeline.from_pretrained(tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_t2av_shapes_and_ranges(pipe):
    out = pipe("a dog barks", generator=gen(), **SMALL)
    assert out.frames.shape == (1, 9, 64, 96, 3)
    assert 0 <= out.frames.min() and out.frames.max() <= 1
    assert out.audio.shape == (1, 9000)  # 9 frames at 16 fps = 0.5625 s at 16 kHz
    assert out.audio.std() > 1e-3  # audible (random) sound, not digital silence
    assert out.sample_rate == 16000 and out.fps == 16


def test_official_sizes_and_durations(pipe):
    out = pipe("rain on a roof", resolution="240p", aspect_ratio="9:16", duration=2, output_type="latent",
               num_inference_steps=1, generator=gen())  # fmt: skip
    assert out.frames.shape == (1, 16, 9, 30, 54)  # 240x426 -> latent 30x54 -> decodes to 240x432
    assert out.audio.shape == (1, 8, 56, 16)  # 33 frames -> 224 mel frames -> 56 latent steps
    out = pipe("rain", resolution="240p", aspect_ratio="portrait", duration=4, output_type="latent",
               num_inference_steps=1, generator=gen())  # fmt: skip
    assert out.frames.shape == (1, 16, 17, 54, 30) and out.audio.shape == (1, 8, 104, 16)


def test_modes(pipe):
    audio_only = pipe("a drum solo", mode="t2a", generator=gen(), **SMALL)
    assert audio_only.frames is None and audio_only.audio.shape == (1, 9000)
    video_only = pipe("a drum solo", mode="t2v", generator=gen(), **SMALL)
    assert video_only.audio is None and video_only.frames.shape == (1, 9, 64, 96, 3)


def test_seed_reproducible_and_latents_in(pipe):
    a = pipe("waves", generator=gen(3), output_type="latent", **SMALL)
    b = pipe("waves", generator=gen(3), output_type="latent", **SMALL)
    c = pipe("waves", generator=gen(4), output_type="latent", **SMALL)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.frames, c.frames)
    noise_v = torch.randn(1, 16, 3, 8, 12, generator=gen(3))
    noise_a = torch.randn(1, 8, 32, 16, generator=gen(4))
    d = pipe("waves", latents=noise_v, audio_latents=noise_a, output_type="latent", **SMALL)
    e = pipe("waves", latents=noise_v.clone(), audio_latents=noise_a.clone(), output_type="latent", **SMALL)
    assert torch.equal(d.frames, e.frames)
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe("waves", latents=torch.randn(1, 4, 3, 8, 12), **SMALL)


def test_audio_guidance_is_separate(pipe):
    # One step: the video update sees the same inputs in both runs (later steps would see different audio).
    one_step = dict(SMALL, num_inference_steps=1)
    base = pipe("birds", generator=gen(), output_type="latent", guidance_scale=5.0, **one_step)
    other = pipe("birds", generator=gen(), output_type="latent", guidance_scale=5.0, audio_guidance_scale=1.5,
                 **one_step)  # fmt: skip
    assert torch.equal(base.frames, other.frames)
    assert not torch.equal(base.audio, other.audio)


def test_unipc_and_shift_override(pipe):
    euler = pipe("fire", generator=gen(), output_type="latent", **SMALL)
    unipc = pipe("fire", generator=gen(), output_type="latent", scheduler="unipc", **SMALL)
    shifted = pipe("fire", generator=gen(), output_type="latent", shift=3.0, **SMALL)
    assert unipc.frames.shape == euler.frames.shape and torch.isfinite(unipc.frames).all()
    assert not torch.equal(euler.frames, unipc.frames) and not torch.equal(euler.frames, shifted.frames)


def test_callback_and_interruption(pipe):
    steps = []

    def stop_after_two(p, step, t, kwargs):
        steps.append((step, float(t), tuple(kwargs)))
        if step == 1:
            p.interrupt_generation()
        return {"audio_latents": torch.zeros_like(kwargs["audio_latents"])}

    out = pipe("thunder", generator=gen(), output_type="latent", callback_on_step_end=stop_after_two,
               callback_on_step_end_tensor_inputs=["latents", "audio_latents"],
               height=64, width=96, num_frames=9, num_inference_steps=6)  # fmt: skip
    assert [s[0] for s in steps] == [0, 1]  # stopped after the second of six steps
    assert steps[0][1] == 1000.0 and steps[0][2] == ("latents", "audio_latents")
    assert torch.count_nonzero(out.audio) == 0  # the callback's replacement was used
    again = pipe("thunder", generator=gen(), output_type="latent", **SMALL)  # the flag resets on the next call
    assert torch.count_nonzero(again.audio) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompt=""), "prompt must be a non-empty string"),
        (dict(prompt="x", duration=7), "duration must be between 2 and 5 seconds"),
        (dict(prompt="x", resolution="300p"), "resolution must be one of 240p, 360p, 480p"),
        (dict(prompt="x", aspect_ratio="5:4"), "aspect_ratio must be one of landscape, portrait, square, 3:8"),
        (dict(prompt="x", num_inference_steps=0), "num_inference_steps must be an integer from 1 to 1000"),
        (dict(prompt="x", guidance_scale=-1), "guidance_scale must be a number from 0 to 50"),
        (dict(prompt="x", num_frames=34), "num_frames must be 4k\\+1"),
        (dict(prompt="x", mode="t2x"), "mode must be one of t2av, t2a, t2v"),
        (dict(prompt="x", height=8, width=96), "height must be an integer from 16 to 1280"),
        (dict(prompt="x", output_type="gif"), "output_type must be one of np, pt, latent"),
    ],
)
def test_bad_input_names_the_field(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_unreadable_model_dir_is_reported(tmp_path):
    from javis_core.loaders.checkpoints import CheckpointError
    from javis_core.loaders.pipeline_loader import load_pipeline

    with pytest.raises(CheckpointError, match="no weights found"):
        load_pipeline(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weight file .*pytorch_model.bin"):
        load_pipeline(tmp_path)


def test_denoise_refines_given_latents(pipe):
    clean = pipe("a bell rings", generator=gen(1), output_type="latent", **SMALL)
    steps = []
    partial = pipe("a bell rings", generator=gen(2), output_type="latent", denoise=0.5,
                   latents=clean.frames, audio_latents=clean.audio,
                   callback_on_step_end=lambda p, i, t, kw: steps.append(float(t)) or {}, **SMALL)  # fmt: skip
    full_schedule = []
    pipe("a bell rings", generator=gen(2), output_type="latent", height=64, width=96, num_frames=9,
         num_inference_steps=4, callback_on_step_end=lambda p, i, t, kw: full_schedule.append(float(t)) or {})  # fmt: skip
    assert steps == full_schedule[2:]  # the last 2 steps of a 4-step schedule
    assert partial.frames.shape == clean.frames.shape
    # Starting half-way from the clean latents stays closer to them than a fresh sample does.
    fresh = pipe("a bell rings", generator=gen(2), output_type="latent", **SMALL)
    assert (partial.frames - clean.frames).norm() < (fresh.frames - clean.frames).norm()
    with pytest.raises(ValueError, match="denoise < 1 refines existing latents: pass latents"):
        pipe("a bell rings", denoise=0.5, **SMALL)
    with pytest.raises(ValueError, match="denoise must be in"):
        pipe("a bell rings", denoise=1.5, **SMALL)


def test_written_mp4_keeps_the_pipeline_colours(pipe, tmp_path):
    from javis_core.media import read_video, write_video

    out = pipe("a lighthouse blinks", generator=gen(), **SMALL)
    path = write_video(tmp_path / "clip.mp4", out.frames[0], fps=out.fps, audio=out.audio[0])
    frames, audio, fps = read_video(path)
    expected = out.frames[0] * 255
    assert frames.shape == expected.shape and fps == 16
    assert abs(frames.mean() - expected.mean()) < 2  # same brightness: [0, 1] floats map to 0..255
    # yuv420p halves chroma resolution: compare 4x4 block averages of the random texture.
    def blocks(x):
        return torch.nn.functional.avg_pool2d(torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2), 4)

    assert (blocks(frames) - blocks(expected)).abs().mean() < 6
