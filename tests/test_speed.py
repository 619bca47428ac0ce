"""Sampling presets and speed options on the tiny pipeline (the figures are in benchmarks/, not here)."""

from __future__ import annotations

import pytest
import torch

from javis_core.pipelines.speed import PRESETS, attention_backends, resolve_attention_backend
from javis_core.tiny import tiny_pipeline

REQUEST = dict(height=64, width=96, num_frames=9, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, **kwargs):
    out = pipe("a dog barks", generator=torch.Generator().manual_seed(0), **REQUEST, **kwargs)
    return out.frames, out.audio


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_exact_preset_is_the_official_sampler(pipe):
    assert PRESETS["exact"].num_inference_steps == 50 and PRESETS["exact"].scheduler == "euler"
    assert _same(_run(pipe, preset="exact"), _run(pipe, num_inference_steps=50, scheduler="euler"))
    assert _same(_run(pipe, preset="exact"), _run(pipe))  # the pipeline's default is the exact sampler


def test_fast_preset_is_fewer_unipc_steps(pipe):
    fast = PRESETS["fast"]
    assert fast.scheduler == "unipc" and fast.num_inference_steps < 50 and fast.cache_threshold is None
    expected = _run(pipe, num_inference_steps=fast.num_inference_steps, scheduler="unipc")
    assert _same(_run(pipe, preset="fast"), expected)


def test_fastest_preset_caches_only_during_its_call(pipe):
    fastest = PRESETS["fastest"]
    calls = []
    handles = [b.norm1.register_forward_pre_hook(lambda *_: calls.append(1)) for b in pipe.transformer.blocks]
    try:
        uncached = _run(pipe, num_inference_steps=fastest.num_inference_steps, scheduler="unipc")
        full = len(calls)
        calls.clear()
        cached = _run(pipe, preset="fastest")
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) < full  # the cache skipped blocks
    assert not pipe.transformer.is_cache_enabled  # and is gone after the call
    assert not _same(cached, uncached)
    assert _same(_run(pipe, num_inference_steps=fastest.num_inference_steps, scheduler="unipc"), uncached)


def test_a_cache_the_user_enabled_is_kept(pipe):
    from diffusers import FirstBlockCacheConfig

    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.01))
    try:
        _run(pipe, preset="fastest")
        assert pipe.transformer.is_cache_enabled
        assert pipe.transformer._cache_config.threshold == 0.01
    finally:
        pipe.transformer.disable_cache()


def test_unknown_preset_and_attention_backend_are_named(pipe):
    with pytest.raises(ValueError, match="preset must be one of exact, fast, fastest"):
        _run(pipe, preset="turbo")
    with pytest.raises(ValueError, match="attention backend must be one of"):
        resolve_attention_backend("turbo")
    assert resolve_attention_backend("cudnn") == "_native_cudnn"
    assert {"native", "flash", "sage", "cudnn"} <= set(attention_backends())
