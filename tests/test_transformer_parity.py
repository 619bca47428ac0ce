"""Parity of the JavisDiT++ transformer with the official implementation (fixtures computed by the official code)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from javis_core.loaders.checkpoints import load_transformer
from javis_core.loaders.official_keys import diffusers_to_official_key, official_to_diffusers_key
from javis_core.models.ta_rope import audio_position_ids, video_position_ids
from javis_core.models.transformer import JavisDiTTransformer3DModel

from .conftest import FIXTURES

TOL = 1e-5


def run(model, io, **extra):
    with torch.no_grad():
        out = model(
            io["in_video"], io["in_t"], io["in_y"],
            audio_hidden_states=io["in_audio"], encoder_attention_mask=io["in_mask"], **extra,
        )  # fmt: skip
    # The official forward returns the negated Wan velocity (docs/official.md §1.5); ours returns the velocity itself.
    return -out.sample, -out.audio_sample


@pytest.fixture(scope="module")
def io(official_tiny):
    return load_file(official_tiny / "tiny_official_io.safetensors")


def test_single_forward_matches_official(official_tiny, io):
    model = load_transformer(official_tiny / "tiny_official_weights.safetensors")
    assert model.config.model_type == "t2av"
    video, audio = run(model, io)
    assert video.shape == io["out_video"].shape and audio.shape == io["out_audio"].shape
    assert (video - io["out_video"]).abs().max() <= TOL
    assert (audio - io["out_audio"]).abs().max() <= TOL


def test_ta_rope_ids_match_official(io):
    # in_video (2,16,5,8,12) -> patched grid 5x4x6; in_audio (2,8,12,16) -> 6 audio steps x 8 mel slots.
    assert torch.equal(video_position_ids(5, 4, 6), io["video_pos_ids"].double())
    assert torch.equal(audio_position_ids(6, 8, 5, 4, 6), io["audio_pos_ids"].double())


def test_ta_rope_spec_examples():
    ids = audio_position_ids(52, 8, 17, 15, 27)  # 240p 9:16, 65 frames
    t_ids = ids.view(52, 8, 3)[:, 0, 0].long().tolist()
    assert t_ids[:12] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4] and t_ids[-4:] == [16, 16, 16, 16]
    assert ids[0].tolist() == [0, 15, 27] and ids[-1].tolist() == [16, 66, 34]
    assert video_position_ids(17, 15, 27)[-1].tolist() == [16, 14, 26]
    ids = audio_position_ids(64, 8, 21, 30, 54)  # 480p, 81 frames
    assert ids[0].tolist() == [0, 30, 54] and ids[-1].tolist() == [20, 93, 61]
    vanilla = audio_position_ids(4, 2, 3, 5, 5, pe_type="vanilla")
    assert vanilla.view(4, 2, 3)[:, 1].tolist() == [[t, t, 1] for t in range(4)]
    interp = audio_position_ids(5, 1, 3, 0, 0, pe_type="interpolate")
    assert interp[:, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    inter = audio_position_ids(5, 1, 3, 9, 9, pe_type="interleave")
    assert inter[:, :2].tolist() == [[0, 0], [1, 1], [1, 2], [2, 3], [2, 4]]
    with pytest.raises(ValueError, match="audio_pe_type"):
        audio_position_ids(5, 1, 3, pe_type="round")


def test_release_layout_with_merged_lora(official_tiny, io):
    expected = load_file(official_tiny / "release" / "expected_merged_io.safetensors")
    model = load_transformer(official_tiny / "release")
    video, audio = run(model, io)
    assert (video - expected["out_video_merged"]).abs().max() <= TOL
    assert (audio - expected["out_audio_merged"]).abs().max() <= TOL
    # Without the adapter the base weights of model/ are the plain fixture network.
    base = load_transformer(official_tiny / "release", lora=False)
    video, _ = run(base, io)
    assert (video - io["out_video"]).abs().max() <= TOL
    assert (video - expected["out_video_merged"]).abs().max() > 1e-3


def test_full_size_on_meta_matches_official_state_dict():
    spec = json.loads((FIXTURES / "official_state_dict.json").read_text())
    with torch.device("meta"):
        model = JavisDiTTransformer3DModel()
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == spec["total_params"] == 2_252_388_960
    official = {entry["key"]: tuple(entry["shape"]) for entry in spec["state_dict"]}
    assert len(official) == spec["num_tensors"] == 982
    mapped = {official_to_diffusers_key(key): shape for key, shape in official.items()}
    assert len(mapped) == len(official)  # one-to-one
    assert mapped == ours
    assert all(diffusers_to_official_key(official_to_diffusers_key(key)) == key for key in official)


def test_mode_sizes_on_meta():
    with torch.device("meta"):
        t2a = JavisDiTTransformer3DModel(model_type="t2a")
        t2v = JavisDiTTransformer3DModel(model_type="t2v")
    assert len(t2a.state_dict()) == 857  # docs/official.md §1.2
    assert len(t2v.state_dict()) == 825
    assert sum(p.numel() for p in t2v.parameters()) == 1_418_996_800 - 0  # the inherited Wan2.1 parameters


def test_wrong_inputs_are_named(official_tiny, io):
    model = load_transformer(official_tiny / "tiny_official_weights.safetensors")
    with pytest.raises(ValueError, match="num_frames"):
        model(None, io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"])
    with pytest.raises(ValueError, match="no video branch"):
        load_transformer(official_tiny / "tiny_official_weights.safetensors", model_type="t2a")(
            io["in_video"], io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"]
        )
    t2a = load_transformer(official_tiny / "tiny_official_weights.safetensors", model_type="t2a")
    with pytest.raises(ValueError, match="num_frames"):
        t2a(None, io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"])
    with pytest.raises(ValueError, match="pass video latents"):
        model(None, io["in_t"], io["in_y"])


def test_t2a_mode_uses_virtual_video_length(official_tiny, io):
    t2a = load_transformer(official_tiny / "tiny_official_weights.safetensors", model_type="t2a")
    assert not hasattr(t2a, "patch_embedding") and not hasattr(t2a.blocks[0], "ffn")
    with torch.no_grad():
        out17 = t2a(None, io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"], num_frames=17)
        out33 = t2a(None, io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"], num_frames=33)
    assert out17.sample is None and out17.audio_sample.shape == io["in_audio"].shape
    # A different clip length moves the audio time ids, hence the output.
    assert (out17.audio_sample - out33.audio_sample).abs().max() > 1e-4
    # The joint model run audio-only behaves exactly like the same weights built as t2a (official audio-only mode).
    joint = load_transformer(official_tiny / "tiny_official_weights.safetensors")
    with torch.no_grad():
        joint_audio = joint(None, io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"], num_frames=17)
    assert torch.equal(joint_audio.audio_sample, out17.audio_sample) and joint_audio.sample is None


def test_gradient_checkpointing_gives_same_gradients(official_tiny, io):
    model = load_transformer(official_tiny / "tiny_official_weights.safetensors").train()

    def grads():
        model.zero_grad()
        out = model(io["in_video"], io["in_t"], io["in_y"], audio_hidden_states=io["in_audio"])
        (out.sample.square().mean() + out.audio_sample.square().mean()).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    assert len(plain) == len(checkpointed) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_bf16_forward_close_to_fp32(official_tiny, io):
    fp32 = load_transformer(official_tiny / "tiny_official_weights.safetensors")
    bf16 = load_transformer(official_tiny / "tiny_official_weights.safetensors", torch_dtype=torch.bfloat16)
    assert bf16.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    # The bf16 model rounds t to bf16 first (official quirk, docs/official.md §11.2): 999 -> 1000, 321.5 -> 322.
    rounded_t = dict(io, in_t=io["in_t"].to(torch.bfloat16).float())
    assert rounded_t["in_t"].tolist() == [1000.0, 322.0]
    ref, _ = run(fp32, rounded_t)
    low, low_audio = run(bf16, io)
    assert low.dtype == torch.float32 and torch.isfinite(low_audio).all()
    rel = (low - ref).norm() / ref.norm()
    assert rel < 0.05, rel
    assert not math.isclose(float(rel), 0.0)
