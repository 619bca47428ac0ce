"""The official replacement conditioning (reference latents + per-frame masks) against a run of the official
`apply_va_mask_strategy` and `RFLOW.multimodal_sample` on the tiny official network (see tests/fixtures/README.md)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from javis_core.loaders.checkpoints import load_transformer
from javis_core.pipelines.conditioning import LatentCondition, audio_window, official_conditions, parse_official_strategy
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.schedule import make_scheduler, official_shift


@pytest.fixture(scope="module")
def fixture(official_tiny):
    path = official_tiny / "tiny_official_conditioning.safetensors"
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
    return load_file(path), meta


def _conditions(data, meta):
    batch = data["ref_video"].shape[0]
    return official_conditions(
        json.loads(meta["strategies"]),
        [[data["ref_video"][i]] for i in range(batch)],
        [[data["ref_audio"][i]] for i in range(batch)],
        tuple(data["noise_video"].shape), tuple(data["noise_audio"].shape),
    )  # fmt: skip


def test_official_strategy_builds_the_official_masks_and_start(fixture):
    data, meta = fixture
    video, audio = _conditions(data, meta)
    assert torch.equal(video.mask, data["mask_video"])
    assert torch.equal(audio.mask, data["mask_audio"])
    assert torch.equal(video.write_into(data["noise_video"]), data["start_video"])
    assert torch.equal(audio.write_into(data["noise_audio"]), data["start_audio"])
    # the quirks the fixture pins: "last 3 of 9" copies latents 5..7 (align=5) and modality 3 leaves the audio
    # past the 52-latent reference as frozen noise
    assert torch.equal(data["start_video"][0, :, 0:3], data["ref_video"][0, :, 5:8])
    assert torch.equal(data["start_audio"][2, :, 52:], data["noise_audio"][2, :, 52:])
    assert (data["mask_audio"][2, 52:] == 0).all()


def _run(data, meta, generator, video, audio):
    transformer = load_transformer(data["__weights__"])
    pipe = JavisDiTPipeline(transformer=transformer, scheduler=make_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    height, width, frames = int(meta["height"]), int(meta["width"]), int(meta["num_frames"])
    seen = []
    out = pipe(
        height=height // 16 * 16, width=width // 16 * 16, num_frames=frames,
        shift=official_shift(height, width, frames),
        num_inference_steps=int(meta["steps"]), guidance_scale=float(meta["guidance_scale"]),
        prompt_embeds=data["y_cond"], prompt_attention_mask=data["mask_cond"],
        negative_prompt_embeds=data["y_neg"], negative_prompt_attention_mask=data["mask_neg"],
        latents=data["noise_video"], audio_latents=data["noise_audio"], output_type="latent",
        video_condition=video, audio_condition=audio, compat=True, generator=generator,
        callback_on_step_end=lambda p, i, t, kw: seen.append(float(t)) or {},
    )  # fmt: skip
    return out, seen


def test_masked_sampling_matches_official(fixture, official_tiny):
    data, meta = fixture
    data = {**data, "__weights__": official_tiny / "tiny_official_weights.safetensors"}
    video, audio = _conditions(data, meta)
    generator = torch.Generator().manual_seed(int(meta["mask_seed"]))
    out, seen = _run(data, meta, generator, video, audio)
    assert torch.allclose(torch.tensor(seen), data["timesteps"], atol=1e-3, rtol=0)
    assert (out.frames - data["out_video"]).abs().max() <= 1e-5
    assert (out.audio - data["out_audio"]).abs().max() <= 1e-5
    # frames held with mask 0 are exactly the reference at the end
    assert torch.equal(out.frames[0, :, 0:3], data["ref_video"][0, :, 5:8])

    # the crossover noise matters: another seed moves the edited frames (and only those held to a fraction)
    other, _ = _run(data, meta, torch.Generator().manual_seed(int(meta["mask_seed"]) + 1), video, audio)
    assert (other.frames[0, :, 5:8] - data["out_video"][0, :, 5:8]).abs().max() > 1e-3
    assert torch.equal(other.frames[0, :, 0:3], out.frames[0, :, 0:3])


def test_strategy_parsing_and_windows():
    assert parse_official_strategy("0,1,-3,0,3") == [(0, 1, -3, 0, 3, 0.0, 0)]
    with pytest.raises(ValueError, match="1 to 7"):
        parse_official_strategy("0,0,0,0,1,0,0,9")
    assert audio_window(1, 4, 56, compat=True) == (5, 21)  # official: int(1*5.3125), int(4*5.3125)
    assert audio_window(1, 4, 56) == (6, 25)  # 6.25 per latent frame: 0.25 s .. 1.25 s
    assert audio_window(8, 2, 56) == (50, 6)  # cut at the end of the clip


def test_condition_shape_errors_name_the_field():
    condition = LatentCondition.empty((1, 16, 9, 4, 6))
    with pytest.raises(ValueError, match=r"video_condition.latents must have shape \(1, 16, 5, 4, 6\)"):
        condition.check((1, 16, 5, 4, 6), "video_condition")
    condition.mask[0, 0] = 2.0
    with pytest.raises(ValueError, match=r"video_condition.mask values must be in \[0, 1\]"):
        condition.check((1, 16, 9, 4, 6), "video_condition")
