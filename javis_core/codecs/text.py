"""umT5-xxl text encoder of JavisDiT++ (docs/official.md §4) on transformers' ``UMT5EncoderModel``.

Prompts are cleaned like Wan's tokenizer (ftfy + double HTML unescape + whitespace collapse), tokenized with
padding to ``max_length`` (512), truncation and an appended EOS, and encoded; positions past each prompt's length
are zeroed, as Wan does by slicing to the sequence length and padding with zeros.

Weights load from a diffusers-format Wan repo (``text_encoder/`` + ``tokenizer/``) or from the original Wan2.1
dir (``models_t5_umt5-xxl-enc-bf16.pth`` + ``google/umt5-xxl/``), whose key names are mapped explicitly.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase, T5Tokenizer, UMT5Config, UMT5EncoderModel

from ..loaders.checkpoints import read_weights

# docs/official.md §4, copied exactly; the video-only part (t2v config) ends at "倒着走".
DEFAULT_NEGATIVE_PROMPT = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走，低音质，差音质，最差音质，噪音，失真的，破音，削波失真，数字瑕疵，声音故障，不自然的，刺耳的，尖锐的，底噪，过多混响，过多回声，突兀的剪辑，不自然的淡出，录音质量差，业余录音"
VIDEO_ONLY_NEGATIVE_PROMPT = DEFAULT_NEGATIVE_PROMPT[: DEFAULT_NEGATIVE_PROMPT.index("倒着走") + len("倒着走")]

TEXT_LEN = 512
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER_DIR = "google/umt5-xxl"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# umT5-xxl as built by Wan (docs/official.md §4); sizes are re-inferred from tensor shapes when loading.
UMT5_XXL_CONFIG = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",  # transformers maps it to gelu_new = GELU(tanh), as Wan's T5 FFN
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
_TIED_KEY = "encoder.embed_tokens.weight"  # alias of shared.weight in UMT5EncoderModel


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy.fix_text, HTML-unescape twice, collapse whitespace, strip."""
    import ftfy  # imported lazily: only prompt cleaning needs it

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------------- key mapping
_WAN_BLOCK_KEYS = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # the GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # the linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_WAN_TOP_KEYS = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_WAN_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")


def _map_key(key: str, top: dict[str, str], block: dict[str, str], pattern: re.Pattern, fmt: str) -> str | None:
    if key in top:
        return top[key]
    match = pattern.match(key)
    if match and match.group(2) in block:
        return fmt.format(match.group(1), block[match.group(2)])
    return None


def wan_t5_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan umT5 encoder keys -> ``UMT5EncoderModel`` keys (docs/official.md §4). Unknown keys raise a ValueError naming them.

    The tied alias ``encoder.embed_tokens.weight`` is not emitted; ``shared.weight`` fills it.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in sd.items():
        new = _map_key(key, _WAN_TOP_KEYS, _WAN_BLOCK_KEYS, _WAN_BLOCK, "encoder.block.{}.{}")
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    if unknown:
        raise ValueError(f"keys not in Wan's umT5 encoder layout: {_names(unknown)}")
    return out


def hf_to_wan_t5_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`wan_t5_to_hf_state_dict` (``encoder.embed_tokens.weight`` is dropped as a tied alias)."""
    top = {v: k for k, v in _WAN_TOP_KEYS.items()}
    block = {v: k for k, v in _WAN_BLOCK_KEYS.items()}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in sd.items():
        if key == _TIED_KEY:
            continue
        new = _map_key(key, top, block, _HF_BLOCK, "blocks.{}.{}")
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    if unknown:
        raise ValueError(f"keys not in UMT5EncoderModel's layout: {_names(unknown)}")
    return out


def _names(keys: Sequence[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def umt5_config_from_wan_state_dict(sd: dict[str, torch.Tensor]) -> UMT5Config:
    """UMT5 config with sizes read from Wan-format tensor shapes; the rest (max distance 128, gated GELU) is xxl's."""
    try:
        vocab, dim = sd["token_embedding.weight"].shape
        buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
        inner = sd["blocks.0.attn.q.weight"].shape[0]
        d_ff = sd["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as error:
        raise ValueError(f"Wan umT5 state dict lacks {error.args[0]!r}, needed to infer the model size") from None
    layers = len({int(m.group(1)) for key in sd if (m := _WAN_BLOCK.match(key))})
    sizes = {"vocab_size": vocab, "d_model": dim, "d_kv": inner // heads, "d_ff": d_ff, "num_layers": layers,
             "num_heads": heads, "relative_attention_num_buckets": buckets}  # fmt: skip
    return UMT5Config(**{**UMT5_XXL_CONFIG, **{k: int(v) for k, v in sizes.items()}})


def _load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    if not path.is_dir() or not any((path / name).exists() for name in TOKENIZER_FILES):
        raise ValueError(f"no tokenizer in {path}: expected {' or '.join(TOKENIZER_FILES)} (+ tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path))


# ---------------------------------------------------------------------------------------------------- encoder
class TextEncoder(nn.Module):
    """umT5 encoder + tokenizer producing (B, max_length, dim) context and (B, max_length) masks."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def dim(self) -> int:
        """Width of the features (4096 for umT5-xxl); works for any transformers encoder."""
        return self.model.get_input_embeddings().embedding_dim

    def tokenize(self, prompts: str | Sequence[str], max_length: int = TEXT_LEN) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> (input ids, attention mask), both (B, L) long; L = ``max_length``, or the tokenizer's
        ``model_max_length`` when smaller (the demo model's tokenizer fixes the length it was trained with)."""
        max_length = min(max_length, self.tokenizer.model_max_length)
        texts = [clean_prompt(p) for p in ([prompts] if isinstance(prompts, str) else prompts)]
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
            return_attention_mask=True, return_tensors="pt",
        )  # fmt: skip
        return tokens["input_ids"].long(), tokens["attention_mask"].long()

    @torch.no_grad()
    def encode(
        self,
        prompts: str | Sequence[str],
        max_length: int = TEXT_LEN,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (embeddings (B, max_length, dim), mask (B, max_length) long).

        The encoder runs on its own device/dtype; ``device``/``dtype`` only place the outputs (default: the
        encoder's). Embeddings past each prompt's token count (EOS included) are exactly zero.
        """
        ids, mask = self.tokenize(prompts, max_length)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = hidden.masked_fill(mask[..., None] == 0, 0.0)
        out_device = self.device if device is None else torch.device(device)
        return hidden.to(device=out_device, dtype=dtype or hidden.dtype), mask.to(out_device)

    forward = encode

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``path/text_encoder`` and ``path/tokenizer`` (diffusers Wan layout)."""
        path = Path(path)
        self.model.save_pretrained(str(path / "text_encoder"))
        self.tokenizer.save_pretrained(str(path / "tokenizer"))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        text_encoder_subfolder: str = "text_encoder",
        tokenizer_subfolder: str = "tokenizer",
    ) -> TextEncoder:
        """Load a diffusers-format Wan repo dir (``text_encoder/`` + ``tokenizer/``). dtype None = as stored."""
        path = Path(path)
        encoder_dir, tokenizer_dir = path / text_encoder_subfolder, path / tokenizer_subfolder
        if not (encoder_dir / "config.json").exists():
            raise ValueError(
                f"no text encoder in {path}: expected {text_encoder_subfolder}/config.json and "
                f"{text_encoder_subfolder}/model.safetensors (or sharded *.safetensors + index) as in "
                f"Wan-AI/Wan2.1-T2V-1.3B-Diffusers; for the original Wan2.1 dir use TextEncoder.from_wan_original"
            )
        tokenizer = _load_tokenizer(tokenizer_dir)
        model_type = AutoConfig.from_pretrained(str(encoder_dir)).model_type
        model_class = UMT5EncoderModel if model_type == "umt5" else AutoModel  # the demo model uses a MiniLM (bert)
        model = model_class.from_pretrained(str(encoder_dir), dtype=torch_dtype or "auto")
        return cls(model.to(device) if device is not None else model, tokenizer)

    @classmethod
    def from_wan_original(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TextEncoder:
        """Load the original Wan2.1 dir: ``models_t5_umt5-xxl-enc-bf16.pth`` + tokenizer in ``google/umt5-xxl/``.

        Loading is strict: every checkpoint key must map and every model tensor must be filled with the right
        shape, else a ValueError names the keys and the file. dtype None keeps the stored dtype (bf16).
        """
        path = Path(path)
        weights = path / WAN_T5_FILE
        if not weights.exists():
            raise ValueError(f"no Wan umT5 weights in {path}: expected {WAN_T5_FILE} and {WAN_TOKENIZER_DIR}/")
        tokenizer = _load_tokenizer(path / WAN_TOKENIZER_DIR)
        wan_sd = read_weights(weights)[0]
        try:
            config = umt5_config_from_wan_state_dict(wan_sd)
            hf_sd = wan_t5_to_hf_state_dict(wan_sd)
        except ValueError as error:
            raise ValueError(f"{weights}: {error}") from None
        with torch.device("meta"):  # no random init of ~5.7B parameters; tensors are assigned below
            model = UMT5EncoderModel(config)
        expected = {k: v.shape for k, v in model.state_dict().items() if k != _TIED_KEY}
        missing = [k for k in expected if k not in hf_sd]
        if missing:
            wan_names = hf_to_wan_t5_state_dict(dict.fromkeys(missing, torch.empty(0)))
            raise ValueError(f"{weights} is missing keys: {_names(list(wan_names))}")
        misshapen = [f"{k} {tuple(hf_sd[k].shape)} != {tuple(s)}" for k, s in expected.items() if hf_sd[k].shape != s]
        unexpected = [k for k in hf_sd if k not in expected]
        if misshapen or unexpected:
            raise ValueError(f"{weights} does not fit the inferred umT5 config: {_names(misshapen + unexpected)}")
        if torch_dtype is not None:
            hf_sd = {k: v.to(torch_dtype) for k, v in hf_sd.items()}
        model.load_state_dict(hf_sd, strict=False, assign=True)
        model.set_input_embeddings(model.shared)  # re-tie encoder.embed_tokens to the assigned shared weight
        if device is not None:
            model.to(device)
        return cls(model, tokenizer)


# ---------------------------------------------------------------------------------------------------- tiny
_TINY_WORDS = (
    "a an the of and with on in at to is are by from cat dog man woman child bird car train city street rain "
    "wind fire water sea ocean wave drum piano guitar violin music song voice crowd plays sings walks runs "
    "barks falls loud soft slowly quickly night day red blue green small big stage forest"
).split()


def tiny_tokenizer() -> T5Tokenizer:
    """An offline Unigram T5 tokenizer: <pad>=0, </s>=1, <unk>=2, some words, ASCII and the negative prompt's CJK."""
    chars = dict.fromkeys(string.ascii_letters + string.digits + string.punctuation + DEFAULT_NEGATIVE_PROMPT)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -5.0) for w in _TINY_WORDS]
    vocab += [(c, -10.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_text_encoder(dim: int = 32, seed: int = 0) -> TextEncoder:
    """A random 2-layer UMT5 encoder (4 heads, d_ff 2*dim) with :func:`tiny_tokenizer`; same seed, same weights."""
    tokenizer = tiny_tokenizer()
    heads = 4
    config = UMT5Config(**{**UMT5_XXL_CONFIG, "vocab_size": len(tokenizer), "d_model": dim, "d_kv": dim // heads,
                           "d_ff": 2 * dim, "num_layers": 2, "num_heads": heads})  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(config)
        with torch.no_grad():  # non-unit norm weights so that a swapped norm mapping changes the outputs
            for name, param in model.named_parameters():
                if "layer_norm" in name:
                    param.add_(0.2 * torch.randn_like(param))
    return TextEncoder(model, tokenizer)


def save_tiny_text_encoder(path: str | Path, dim: int = 32, seed: int = 0) -> TextEncoder:
    """Write a tiny text encoder as ``path/text_encoder`` + ``path/tokenizer``; returns the saved encoder."""
    encoder = tiny_text_encoder(dim=dim, seed=seed)
    encoder.save_pretrained(path)
    return encoder
