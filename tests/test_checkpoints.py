"""Loading paths: conversion round trip, Wan2.1 checkpoints, corrupted/incomplete checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from javis_core import convert
from javis_core.loaders.checkpoints import CheckpointError, load_transformer
from javis_core.loaders.official_keys import diffusers_to_official_key
from javis_core.models.transformer import JavisDiTTransformer3DModel


@pytest.fixture(scope="module")
def io(official_tiny):
    return load_file(official_tiny / "tiny_official_io.safetensors")


def forward(model, io, video=True, audio=True):
    with torch.no_grad():
        return model(
            io["in_video"] if video else None, io["in_t"], io["in_y"],
            audio_hidden_states=io["in_audio"] if audio else None, encoder_attention_mask=io["in_mask"],
        )  # fmt: skip


def test_convert_round_trip(official_tiny, io, tmp_path, capsys):
    out = tmp_path / "converted"
    assert convert.main(["--official", str(official_tiny / "release"), "--out", str(out)]) == 0
    assert "2 " not in capsys.readouterr().err
    reloaded = JavisDiTTransformer3DModel.from_pretrained(out)
    direct = load_transformer(official_tiny / "release")
    a, b = forward(reloaded, io), forward(direct, io)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.audio_sample, b.audio_sample)
    # The converted dir also goes through the generic loader, and a second save gives identical weights.
    again = load_transformer(out)
    again.save_pretrained(tmp_path / "again")
    first = load_file(out / "diffusion_pytorch_model.safetensors")
    second = load_file(tmp_path / "again" / "diffusion_pytorch_model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_convert_to_bf16(official_tiny, tmp_path):
    out = tmp_path / "bf16"
    assert convert.main(["--official", str(official_tiny / "release"), "--out", str(out), "--dtype", "bf16"]) == 0
    weights = load_file(out / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}


def test_convert_reports_bad_input(tmp_path, capsys):
    assert convert.main(["--official", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _copy_release(official_tiny, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(official_tiny / "release", release)
    return release


def test_truncated_shard_names_the_file(official_tiny, tmp_path):
    release = _copy_release(official_tiny, tmp_path)
    shard = release / "model" / "pytorch_model-00002.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="pytorch_model-00002.bin"):
        load_transformer(release)


def test_missing_shard_and_missing_keys_are_listed(official_tiny, tmp_path):
    release = _copy_release(official_tiny, tmp_path)
    (release / "model" / "pytorch_model-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="missing: .*pytorch_model-00002.bin"):
        load_transformer(release)

    release = _copy_release(official_tiny, tmp_path / "b")
    weights = load_file(official_tiny / "tiny_official_weights.safetensors")
    del weights["blocks.1.audio_ffn.2.weight"]
    weights["blocks.0.cross_attn.q.weight"] = weights["blocks.0.cross_attn.q.weight"][:, :64].contiguous()
    weights["blocks.0.surprise.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="surprise"):
        load_transformer(tmp_path / "broken.safetensors")
    del weights["blocks.0.surprise.weight"]
    save_file(weights, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "broken.safetensors")
    message = str(error.value)
    assert "blocks.1.audio_ffn.net.2.weight" in message and "missing 1 keys" in message
    assert "blocks.0.attn2.to_q.weight (broken.safetensors): checkpoint (128, 64) vs model (128, 128)" in message


def test_incomplete_lora_is_reported(official_tiny, tmp_path):
    release = _copy_release(official_tiny, tmp_path)
    adapter = load_file(release / "lora" / "adapter_model.safetensors")
    adapter = {k: v for k, v in adapter.items() if k != "base_model.model.blocks.0.ffn.0.lora_B.weight"}
    save_file(adapter, release / "lora" / "adapter_model.safetensors")
    with pytest.raises(CheckpointError, match="blocks.0.ffn.0 are incomplete"):
        load_transformer(release)


def _tiny_wan(seed=0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    wan = WanTransformer3DModel(
        num_attention_heads=2, attention_head_dim=64, text_dim=32, ffn_dim=96, num_layers=2, freq_dim=64
    )
    with torch.no_grad():  # diffusers zero-initialises nothing, but make sure every tensor is informative
        for param in wan.parameters():
            param.normal_(0, 0.05)
    return wan.eval()


def test_wan_diffusers_checkpoint_gives_wan_outputs_in_t2v(tmp_path):
    wan = _tiny_wan()
    wan.save_pretrained(tmp_path / "wan")
    ours = load_transformer(tmp_path / "wan", model_type="t2v")
    video = torch.randn(1, 16, 3, 8, 8)
    text = torch.randn(1, 7, 32)
    t = torch.tensor([437.0])
    with torch.no_grad():
        expected = wan(video, t, text).sample
        got = ours(video, t, text).sample
    assert (got - expected).abs().max() <= 1e-5


def test_wan_base_initialises_audio_branch_from_video(tmp_path):
    wan = _tiny_wan()
    wan.save_pretrained(tmp_path / "wan")
    joint = load_transformer(tmp_path / "wan", model_type="t2av")
    dim = 128
    block = joint.blocks[1]
    assert torch.equal(block.audio_ffn.net[0].proj.weight, block.ffn.net[0].proj.weight)
    assert torch.equal(block.audio_scale_shift_table, block.scale_shift_table[:, 3:6])
    assert torch.equal(joint.audio_time_proj.weight, joint.condition_embedder.time_proj.weight[3 * dim :])
    assert torch.count_nonzero(joint.audio_proj_out.weight) == 0  # zero-initialised audio head (docs/official.md §1.8)
    with torch.no_grad():
        out = joint(torch.randn(1, 16, 3, 8, 8), torch.tensor([500.0]), torch.randn(1, 7, 32),
                    audio_hidden_states=torch.randn(1, 8, 12, 16))  # fmt: skip
    assert out.audio_sample.shape == (1, 8, 12, 16)

    # The same Wan weights in the original single-file format (official key names) load the same way.
    original = {diffusers_to_official_key(k): v for k, v in wan.state_dict().items()}
    save_file(original, tmp_path / "diffusion_pytorch_model.safetensors")
    t2a = load_transformer(tmp_path / "diffusion_pytorch_model.safetensors", model_type="t2a",
                           num_attention_heads=2)  # fmt: skip
    assert torch.equal(t2a.blocks[1].audio_ffn.net[2].weight, wan.blocks[1].ffn.net[2].weight)
    assert not hasattr(t2a.blocks[1], "ffn")


def test_our_layout_refuses_other_model_type(official_tiny, tmp_path):
    load_transformer(official_tiny / "release").save_pretrained(tmp_path / "ours")
    with pytest.raises(CheckpointError, match="not 't2v'"):
        load_transformer(tmp_path / "ours", model_type="t2v")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["_class_name"] == "JavisDiTTransformer3DModel"


def test_a_missing_key_is_named_as_in_the_users_file(tmp_path):
    original = {diffusers_to_official_key(k): v for k, v in _tiny_wan().state_dict().items()}
    del original["blocks.1.self_attn.q.bias"]
    save_file(original, tmp_path / "wan.safetensors")
    both_names = r"blocks\.1\.attn1\.to_q\.bias \(in the file: blocks\.1\.self_attn\.q\.bias\)"
    with pytest.raises(CheckpointError, match=both_names):
        load_transformer(tmp_path / "wan.safetensors", model_type="t2v", num_attention_heads=2)


def test_convert_takes_the_head_count_and_refuses_to_guess_it(tmp_path, capsys):
    torch.manual_seed(0)
    wan = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=24, text_dim=32, ffn_dim=96, num_layers=1,
                                freq_dim=64)  # fmt: skip
    save_file({diffusers_to_official_key(k): v for k, v in wan.state_dict().items()}, tmp_path / "wan.safetensors")
    args = ["--official", str(tmp_path / "wan.safetensors"), "--model-type", "t2v"]
    assert convert.main([*args, "--out", str(tmp_path / "guessed")]) == 2  # 48 wide: not 128-wide heads
    assert "give it (javis_core.convert --num-heads N)" in capsys.readouterr().err
    assert convert.main([*args, "--out", str(tmp_path / "ours"), "--num-heads", "2"]) == 0
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (config["num_attention_heads"], config["attention_head_dim"]) == (2, 24)
