"""Every diffusers mixin in the transformer's and pipeline's bases, exercised on the tiny model.

`JavisDiTTransformer3DModel` lists ModelMixin, PeftAdapterMixin, CacheMixin and AttentionMixin: caches skip block
calls and restore the exact output when disabled, a LoRA's strength follows ``attention_kwargs={"scale": s}``,
float8 layerwise casting runs, the attention backend and QKV fusion keep the output, and the pipeline's CPU offload
and group offloading give the same latents.
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from peft import LoraConfig

from javis_core.tiny import tiny_pipeline, tiny_transformer

REQUEST = dict(height=64, width=96, num_frames=9, num_inference_steps=8, output_type="latent")


def _inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(2, 16, 3, 8, 12, generator=g),
        timestep=torch.tensor([700.0, 700.0]),
        encoder_hidden_states=torch.randn(2, 7, 32, generator=g),
        audio_hidden_states=torch.randn(2, 8, 8, 16, generator=g),
    )


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def block_calls(pipe):
    """Counts the blocks that really run (a cached block returns before its first norm)."""
    calls = []
    handles = [block.norm1.register_forward_pre_hook(lambda *_: calls.append(1)) for block in pipe.transformer.blocks]
    yield calls
    for handle in handles:
        handle.remove()


def _latents(pipe, **kwargs):
    out = pipe("a dog barks", generator=torch.Generator().manual_seed(0), **REQUEST, **kwargs)
    return out.frames, out.audio


CACHES = {
    "first_block": lambda pipe: FirstBlockCacheConfig(threshold=0.5),
    "taylorseer": lambda pipe: TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=2, taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"blocks\.1"], skip_predict_identifiers=[r"blocks\.0"],
    ),  # fmt: skip
    "mag": lambda pipe: MagCacheConfig(mag_ratios=[1.0] * 8, num_inference_steps=8, threshold=0.5),
}


@pytest.mark.parametrize("name", list(CACHES))
def test_cache_skips_blocks_and_disabling_restores_exact_output(pipe, block_calls, name):
    base = _latents(pipe)
    full = len(block_calls)
    assert full == 2 * REQUEST["num_inference_steps"]

    block_calls.clear()
    pipe.transformer.enable_cache(CACHES[name](pipe))
    try:
        cached = _latents(pipe)
        assert pipe.transformer.is_cache_enabled
    finally:
        pipe.transformer.disable_cache()
    assert len(block_calls) < full, f"{name} ran every block"
    for got, want in zip(cached, base):
        error = ((got - want).norm() / want.norm()).item()
        assert 0 < error < 0.2, f"{name}: relative latent error {error}"

    block_calls.clear()
    restored = _latents(pipe)
    assert len(block_calls) == full
    assert all(torch.equal(got, want) for got, want in zip(restored, base))


def test_cache_state_does_not_leak_between_calls(pipe):
    pipe.transformer.enable_cache(CACHES["first_block"](pipe))
    try:
        first, second = _latents(pipe), _latents(pipe)
    finally:
        pipe.transformer.disable_cache()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_lora_scale_through_attention_kwargs():
    model = tiny_transformer()
    inputs = _inputs()
    with torch.no_grad():
        base = model(**inputs).sample
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                 init_lora_weights=False))  # fmt: skip
    with torch.no_grad():
        full = model(**inputs).sample
        zero = model(**inputs, attention_kwargs={"scale": 0.0}).sample
        half = model(**inputs, attention_kwargs={"scale": 0.5}).sample
        again = model(**inputs).sample
    assert (full - base).abs().max() > 1e-3
    torch.testing.assert_close(zero, base, rtol=1e-5, atol=1e-6)
    assert 0 < (half - base).abs().max() < (full - base).abs().max()
    torch.testing.assert_close(again, full)  # the scale is undone after the call


def test_lora_scale_through_the_pipeline(pipe):
    base = _latents(pipe)
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False))
    try:
        with_lora = _latents(pipe)
        scaled_off = _latents(pipe, attention_kwargs={"scale": 0.0})
    finally:
        transformer.delete_adapters(transformer.active_adapters())
    assert not torch.allclose(with_lora[0], base[0])
    for got, want in zip(scaled_off, base):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_layerwise_casting_float8_storage():
    model = tiny_transformer()
    reference = copy.deepcopy(model)
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert model.activation_dtype == torch.float32 and model.dtype == torch.float32
    # The same weights rounded to float8 by hand give the same output.
    with torch.no_grad():
        for name, module in reference.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d, torch.nn.Conv2d)) and name.startswith("blocks"):
                module.weight.copy_(module.weight.to(torch.float8_e4m3fn).float())
                if module.bias is not None:
                    module.bias.copy_(module.bias.to(torch.float8_e4m3fn).float())
        inputs = _inputs()
        got, want = model(**inputs), reference(**inputs)
    assert torch.isfinite(got.sample).all() and torch.isfinite(got.audio_sample).all()
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.audio_sample, want.audio_sample, rtol=1e-4, atol=1e-5)


def test_attention_backend_native_and_qkv_fusion():
    model = tiny_transformer()
    inputs = _inputs()
    with torch.no_grad():
        base = model(**inputs)
        model.set_attention_backend("native")
        native = model(**inputs)
        model.fuse_qkv_projections()
        fused = model(**inputs)
        model.unfuse_qkv_projections()
    torch.testing.assert_close(native.sample, base.sample)
    torch.testing.assert_close(fused.sample, base.sample, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.audio_sample, base.audio_sample, rtol=1e-5, atol=1e-6)
    assert len(model.attn_processors) == 2 * len(model.blocks)
    with pytest.raises(ValueError, match="not_a_backend"):
        model.set_attention_backend("not_a_backend")


def test_model_cpu_offload_gives_the_same_latents():
    reference, offloaded = tiny_pipeline(), tiny_pipeline()
    for p in (reference, offloaded):
        p.set_progress_bar_config(disable=True)
    offloaded.enable_model_cpu_offload(device="cpu")
    for got, want in zip(_latents(offloaded), _latents(reference)):
        assert torch.equal(got, want)


def test_group_offloading_gives_the_same_latents():
    reference, offloaded = tiny_pipeline(), tiny_pipeline()
    for p in (reference, offloaded):
        p.set_progress_bar_config(disable=True)
    offloaded.transformer.enable_group_offload(
        onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )
    for got, want in zip(_latents(offloaded), _latents(reference)):
        assert torch.equal(got, want)


@pytest.mark.slow
def test_compiled_pipeline_gives_the_uncompiled_latents():
    """load_pipeline(compile=True): regional torch.compile (inductor on the CPU) of the blocks keeps the sampler."""
    from javis_core.loaders.pipeline_loader import configure_speed

    reference, compiled = tiny_pipeline(), tiny_pipeline()
    for p in (reference, compiled):
        p.set_progress_bar_config(disable=True)
    configure_speed(compiled, "cpu", compile=True)
    request = REQUEST | {"num_inference_steps": 3}
    want = reference("a dog barks", generator=torch.Generator().manual_seed(0), **request)
    got = compiled("a dog barks", generator=torch.Generator().manual_seed(0), **request)
    assert all(hasattr(block, "_compiled_call_impl") and block._compiled_call_impl is not None
               for block in compiled.transformer.blocks)  # fmt: skip
    torch.testing.assert_close(got.frames, want.frames, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.audio, want.audio, rtol=1e-4, atol=1e-5)
