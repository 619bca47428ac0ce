"""umT5 text encoder: encoding contract, save/reload, Wan-original loading (docs/official.md §4)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from javis_core.codecs.text import (
    DEFAULT_NEGATIVE_PROMPT,
    VIDEO_ONLY_NEGATIVE_PROMPT,
    WAN_T5_FILE,
    WAN_TOKENIZER_DIR,
    TextEncoder,
    clean_prompt,
    hf_to_wan_t5_state_dict,
    save_tiny_text_encoder,
    tiny_text_encoder,
    wan_t5_to_hf_state_dict,
)

PROMPTS = ["a cat plays piano", "rain falls on the street at night while a crowd sings loud"]
MAX_LEN = 48


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return tiny_text_encoder()


def write_wan_original(encoder: TextEncoder, path: Path, drop: str | None = None) -> Path:
    """The tiny encoder in the original Wan2.1 layout (inverse key mapping), optionally without one key."""
    sd = hf_to_wan_t5_state_dict(encoder.model.state_dict())
    if drop is not None:
        del sd[drop]
    (path / WAN_TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    torch.save(sd, path / WAN_T5_FILE)
    encoder.tokenizer.save_pretrained(str(path / WAN_TOKENIZER_DIR))
    return path


def test_encode_shapes_masks_zero_padding(encoder: TextEncoder) -> None:
    emb, mask = encoder.encode(PROMPTS, max_length=MAX_LEN)
    assert emb.shape == (2, MAX_LEN, 32) and mask.shape == (2, MAX_LEN)
    assert mask.dtype == torch.long and emb.dtype == torch.float32
    lengths = mask.sum(1).tolist()
    assert lengths[0] < lengths[1] < MAX_LEN
    ids, _ = encoder.tokenize(PROMPTS, MAX_LEN)
    for row, length in enumerate(lengths):
        assert mask[row, :length].eq(1).all() and mask[row, length:].eq(0).all()
        assert ids[row, length - 1] == encoder.tokenizer.eos_token_id  # EOS appended by the tokenizer
        assert emb[row, length:].eq(0).all()
        assert emb[row, :length].abs().sum(-1).gt(0).all()
    emb2, mask2 = encoder.encode(PROMPTS, max_length=MAX_LEN)
    assert torch.equal(emb, emb2) and torch.equal(mask, mask2)
    # each prompt encodes the same alone as in the batch (no cross-talk through padding)
    single, _ = encoder.encode(PROMPTS[:1], max_length=MAX_LEN)
    torch.testing.assert_close(single[0], emb[0])


def test_truncation_keeps_eos_and_output_placement(encoder: TextEncoder) -> None:
    emb, mask = encoder.encode([DEFAULT_NEGATIVE_PROMPT], max_length=16, dtype=torch.bfloat16, device="cpu")
    ids, _ = encoder.tokenize([DEFAULT_NEGATIVE_PROMPT], 16)
    assert mask.sum() == 16 and ids[0, -1] == encoder.tokenizer.eos_token_id
    assert emb.dtype == torch.bfloat16 and emb.device.type == "cpu"


def test_clean_prompt() -> None:
    assert clean_prompt("  a &amp;amp; b\n\t c ") == "a & b c"
    assert clean_prompt("schÃ¶n") == "schön"  # ftfy repairs mojibake


def test_save_and_reload_identical(encoder: TextEncoder, tmp_path: Path) -> None:
    saved = save_tiny_text_encoder(tmp_path)
    assert (tmp_path / "text_encoder" / "config.json").exists() and (tmp_path / "tokenizer").is_dir()
    loaded = TextEncoder.from_pretrained(tmp_path)
    for enc in (saved, loaded):
        emb, mask = enc.encode(PROMPTS, max_length=MAX_LEN)
        ref, ref_mask = encoder.encode(PROMPTS, max_length=MAX_LEN)
        assert torch.equal(emb, ref) and torch.equal(mask, ref_mask)


def test_wan_original_roundtrip(encoder: TextEncoder, tmp_path: Path) -> None:
    write_wan_original(encoder, tmp_path)
    loaded = TextEncoder.from_wan_original(tmp_path, torch_dtype=torch.float32)
    assert loaded.model.config.num_layers == 2 and loaded.model.config.num_heads == 4
    emb, mask = loaded.encode(PROMPTS, max_length=MAX_LEN)
    ref, ref_mask = encoder.encode(PROMPTS, max_length=MAX_LEN)
    assert torch.equal(emb, ref) and torch.equal(mask, ref_mask)
    assert loaded.model.shared.weight is loaded.model.encoder.embed_tokens.weight


def _wan_t5_reference(sd: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wan's umT5 encoder written from docs/official.md §4 on Wan-named weights (per-layer relative bias, unscaled attention,
    RMS norm, FFN fc2(fc1(x) * gelu_tanh(gate(x))))."""

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def buckets(rel: torch.Tensor, num: int = 32, max_dist: int = 128) -> torch.Tensor:
        half = num // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    x = sd["token_embedding.weight"][ids]
    b, n, _ = x.shape
    pos = torch.arange(n)
    bucket = buckets(pos[None, :] - pos[:, None])
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(layers):
        w = {k[len(f"blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = norm(x, w["norm1.weight"])
        heads = w["pos_embedding.embedding.weight"].shape[1]
        q, k, v = (F.linear(h, w[f"attn.{p}.weight"]).view(b, n, heads, -1).transpose(1, 2) for p in "qkv")
        scores = q @ k.transpose(-1, -2) + w["pos_embedding.embedding.weight"][bucket].permute(2, 0, 1)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + F.linear(attn, w["attn.o.weight"])
        h = norm(x, w["norm2.weight"])
        gate = F.gelu(F.linear(h, w["ffn.gate.0.weight"]), approximate="tanh")
        x = x + F.linear(F.linear(h, w["ffn.fc1.weight"]) * gate, w["ffn.fc2.weight"])
    return norm(x, sd["norm.weight"])


def test_key_mapping_matches_wan_semantics(encoder: TextEncoder) -> None:
    """The key mapping of docs/official.md §4 is numerically right: a Wan T5 written from that description, on Wan
    keys, equals UMT5EncoderModel."""
    wan_sd = hf_to_wan_t5_state_dict(encoder.model.state_dict())
    assert set(wan_t5_to_hf_state_dict(wan_sd)) | {"encoder.embed_tokens.weight"} == set(encoder.model.state_dict())
    ids, mask = encoder.tokenize(PROMPTS, MAX_LEN)
    ref = _wan_t5_reference(wan_sd, ids, mask) * mask[..., None]
    emb, _ = encoder.encode(PROMPTS, max_length=MAX_LEN)
    torch.testing.assert_close(emb, ref, rtol=1e-4, atol=1e-5)


def test_wan_original_missing_and_unknown_keys(encoder: TextEncoder, tmp_path: Path) -> None:
    write_wan_original(encoder, tmp_path / "missing", drop="blocks.1.ffn.fc1.weight")
    with pytest.raises(ValueError, match=r"blocks\.1\.ffn\.fc1\.weight") as info:
        TextEncoder.from_wan_original(tmp_path / "missing")
    assert WAN_T5_FILE in str(info.value)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.extra\.weight"):
        wan_t5_to_hf_state_dict({"blocks.0.attn.extra.weight": torch.zeros(1)})


def test_missing_files_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=WAN_T5_FILE):
        TextEncoder.from_wan_original(tmp_path)
    with pytest.raises(ValueError, match="text_encoder/config.json"):
        TextEncoder.from_pretrained(tmp_path)


def test_negative_prompts() -> None:
    assert "\n" not in DEFAULT_NEGATIVE_PROMPT and len(DEFAULT_NEGATIVE_PROMPT) == 225
    assert DEFAULT_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态")
    assert "低音质" in DEFAULT_NEGATIVE_PROMPT and DEFAULT_NEGATIVE_PROMPT.endswith("业余录音")
    assert VIDEO_ONLY_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    assert "音" not in VIDEO_ONLY_NEGATIVE_PROMPT
    assert DEFAULT_NEGATIVE_PROMPT.startswith(VIDEO_ONLY_NEGATIVE_PROMPT + "，低音质")
