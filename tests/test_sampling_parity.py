"""The official 4-step sampling run (CFG 5, 240p "9:16", 65 frames) reproduced through JavisDiTPipeline."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from javis_core.loaders.checkpoints import load_transformer
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.schedule import make_scheduler, official_shift, official_sigmas


def test_shift_uses_official_bf16_arithmetic():
    assert official_shift(240, 426, 65) == 2.421875  # exact fp32 would be 2.41872
    assert official_shift(480, 854, 81) == 5.59375
    assert abs(official_shift(240, 426, 33) - 1.3984) < 1e-4
    assert abs(official_shift(360, 640, 49) - 2.9531) < 1e-4
    assert official_shift(240, 426, 65, scale=5.0) > 12
    sigmas = official_sigmas(50, official_shift(240, 426, 65))
    thousand = [s * 1000 for s in sigmas]
    assert [round(t, 3) for t in thousand[:4]] == [1000.0, 991.644, 983.087, 974.321]
    assert [round(t, 3) for t in thousand[-4:]] == [173.962, 133.890, 91.662, 47.098]


def test_four_step_sampling_matches_official(official_tiny):
    fixture = load_file(official_tiny / "tiny_official_sampling.safetensors")
    transformer = load_transformer(official_tiny / "tiny_official_weights.safetensors")
    pipe = JavisDiTPipeline(transformer=transformer, scheduler=make_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    seen = []
    out = pipe(
        height=240 // 16 * 16, width=426 // 16 * 16, num_frames=65, shift=official_shift(240, 426, 65),
        num_inference_steps=4, guidance_scale=5.0,
        prompt_embeds=fixture["y_cond"], prompt_attention_mask=fixture["mask_cond"],
        negative_prompt_embeds=fixture["y_neg"], negative_prompt_attention_mask=fixture["mask_neg"],
        latents=fixture["noise_video"], audio_latents=fixture["noise_audio"], output_type="latent",
        callback_on_step_end=lambda p, i, t, kw: seen.append(float(t)) or {},
    )  # fmt: skip
    assert torch.allclose(torch.tensor(seen), fixture["timesteps"], atol=1e-3, rtol=0)
    assert (out.frames - fixture["out_video"]).abs().max() <= 1e-5
    assert (out.audio - fixture["out_audio"]).abs().max() <= 1e-5
