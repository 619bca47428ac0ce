"""Our loaded modules as ComfyUI's own objects; imported only inside ComfyUI.

* MODEL: a ``ModelPatcher`` around ``core.JavisDiTModel`` (weights under ``diffusion_model.``), so ComfyUI decides
  where the transformer lives (``load_models_gpu`` before sampling, offload/unload between runs, partial loading
  in low VRAM: its layers are ComfyUI's ``comfy.ops`` ones) and
  ComfyUI's LoRA loaders patch it where the LoRA's key names match ours;
* CLIP: a ``comfy.sd.CLIP`` whose model encodes with our ``TextEncoder`` (the demo's MiniLM, umT5 from a
  pipeline dir), so ``CLIPTextEncode`` makes its CONDITIONING;
* VAE: a ``comfy.sd.VAE`` whose ``first_stage_model`` is our diffusers video VAE, so ``VAEDecode`` and
  ``VAEDecodeTiled`` decode our LATENT; a decode shows progress per latent frame and stops on Cancel;
* JAVISDIT_AUDIO_VAE: a ``ModelPatcher`` around ``AudioCodec``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.utils
import latent_preview
import torch

from javis_core.codecs.text import TextEncoder

from . import core


def latent_format(model: core.JavisDiTModel) -> comfy.latent_formats.LatentFormat:
    """What ComfyUI's live preview reads: Wan2.1's latent-to-RGB table, or the one fitted to the demo codec."""
    if model.preview_factors is None:
        return comfy.latent_formats.Wan21()
    fitted = comfy.latent_formats.LatentFormat()
    fitted.latent_channels, fitted.latent_dimensions = len(model.preview_factors[0]), 3
    fitted.latent_rgb_factors, fitted.latent_rgb_factors_bias = model.preview_factors
    return fitted


# torch layer -> ComfyUI's layer of the same kind (same parameters and forward), which its partial loading can leave
# on the offload device and cast per call
COMFY_LAYERS = {
    torch.nn.Linear: comfy.ops.disable_weight_init.Linear, torch.nn.Conv2d: comfy.ops.disable_weight_init.Conv2d,
    torch.nn.Conv3d: comfy.ops.disable_weight_init.Conv3d, torch.nn.LayerNorm: comfy.ops.disable_weight_init.LayerNorm,
    torch.nn.RMSNorm: comfy.ops.disable_weight_init.RMSNorm,
}  # fmt: skip


def use_comfy_layers(module: torch.nn.Module) -> None:
    """Re-class our torch layers as ComfyUI's, in place, so ``--lowvram`` / a model larger than the free VRAM loads
    the transformer in part (the rest cast to the device layer by layer) instead of not at all."""
    for layer in module.modules():
        comfy_class = COMFY_LAYERS.get(type(layer))
        if comfy_class is not None:
            layer.__class__ = comfy_class
            if not hasattr(layer, "bias"):  # torch's RMSNorm has none; ComfyUI's weight casting reads it
                layer.bias = None


def model_patcher(model: core.JavisDiTModel) -> comfy.model_patcher.ModelPatcher:
    model.model_config = SimpleNamespace(unet_config={})  # what comfy.lora reads beside the state dict
    model.latent_format = latent_format(model)
    use_comfy_layers(model.diffusion_model)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())  # fmt: skip


def loaded_model(patcher: Any) -> core.JavisDiTModel:
    """The transformer on the device ComfyUI chose, with any LoRA patches applied."""
    if not isinstance(getattr(patcher, "model", None), core.JavisDiTModel):
        raise ValueError("model: connect a JavisDiT++ Model Loader (ComfyUI's own loaders make a plain Wan model)")
    mm.load_models_gpu([patcher])
    return patcher.model


def audio_patcher(codec: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(codec, load_device=mm.vae_device(), offload_device=mm.vae_offload_device())


def loaded_audio(patcher: Any) -> torch.nn.Module:
    mm.load_models_gpu([patcher])
    return patcher.model


class _TextModel(torch.nn.Module):
    """The ``cond_stage_model`` interface ComfyUI's CLIP calls, on our TextEncoder."""

    encoder: TextEncoder

    def __init__(self, device=None, dtype=None, model_options=None) -> None:
        super().__init__()
        self.dtypes = {dtype}
        self.execution_device = device

    def reset_clip_options(self) -> None:
        pass

    def set_clip_options(self, options: dict) -> None:
        self.execution_device = options.get("execution_device", self.execution_device)

    def encode_token_weights(self, tokens: dict) -> tuple[torch.Tensor, None, dict]:
        ((features, extra),) = core.encode_text(self.encoder, tokens["text"])
        return features.to(mm.intermediate_device()), None, extra


class _PromptTokenizer:
    """Keeps the prompt: our TextEncoder cleans and tokenizes it the way its model was trained."""

    def __init__(self, embedding_directory=None, tokenizer_data=None) -> None:
        pass

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        return {"text": text}

    def state_dict(self) -> dict:
        return {}


def clip(encoder: TextEncoder) -> comfy.sd.CLIP:
    class Model(_TextModel):
        def __init__(self, device=None, dtype=None, model_options=None) -> None:
            super().__init__(device, dtype, model_options)
            self.encoder = encoder.to(device=device, dtype=dtype)

    target = SimpleNamespace(params={}, clip=Model, tokenizer=_PromptTokenizer)
    parameters = sum(p.numel() for p in encoder.parameters())
    # the demo's MiniLM and small encoders stay in fp32; ComfyUI picks the dtype of a full umT5
    options = {"dtype": torch.float32} if parameters < 200_000_000 else {}
    return comfy.sd.CLIP(target=target, parameters=parameters, model_options=options)


class _DecodeProgress:
    """ComfyUI's progress bar and Cancel around the per-latent-frame decoder calls of a video decode."""

    def __init__(self, decoder: core.RawVideoDecoder) -> None:
        self.decoder, self.bar, self.total = decoder, None, 0

    def start(self, latent_frames: int) -> None:
        self.total = latent_frames
        self.bar = comfy.utils.ProgressBar(latent_frames)

    def __call__(self, module, args) -> None:
        mm.throw_exception_if_processing_interrupted()
        if self.bar is not None:
            self.bar.update(1)


class JavisVAE(comfy.sd.VAE):
    """ComfyUI's VAE object on our video VAE (Wan2.1 layout: 4x in time, ``stride`` in space)."""

    def __init__(self, vae: torch.nn.Module) -> None:  # not super().__init__: it reads only ComfyUI-format VAE files
        stride = core.spatial_stride(vae)
        self.first_stage_model = core.RawVideoDecoder(vae).eval()
        self.upscale_ratio = (lambda a: max(0, a * 4 - 3), stride, stride)
        self.upscale_index_formula = (4, stride, stride)
        self.downscale_ratio = (lambda a: max(0, math.floor((a + 3) / 4)), stride, stride)
        self.downscale_index_formula = (4, stride, stride)
        self.latent_dim, self.latent_channels, self.output_channels = 3, int(vae.config.z_dim), 3
        self.memory_used_encode = lambda shape, dtype: 6000 * shape[3] * shape[4] * mm.dtype_size(dtype)
        self.memory_used_decode = lambda shape, dtype: 7000 * shape[3] * shape[4] * stride**2 * mm.dtype_size(dtype)
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.working_dtypes = [torch.float32]
        self.disable_offload, self.not_video, self.crop_input = False, False, True
        self.extra_1d_channel = None
        self.device = mm.vae_device()
        self.vae_dtype = torch.float32
        self.output_device = mm.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=mm.vae_offload_device())  # fmt: skip
        self.progress = _DecodeProgress(self.first_stage_model)
        for module in self.first_stage_model.decode_steps():
            module.register_forward_pre_hook(self.progress)

    def decode(self, samples_in: torch.Tensor, vae_options: dict | None = None) -> torch.Tensor:
        self.progress.start(samples_in.shape[0] * samples_in.shape[2])
        return super().decode(samples_in, vae_options or {})


class StepHooks:
    """The sampler's progress bar with a live preview of each step's clean-video estimate, and Cancel."""

    def __init__(self, model: core.JavisDiTModel) -> None:
        self.previewer = latent_preview.get_previewer(mm.get_torch_device(), model.latent_format)
        self.bar: comfy.utils.ProgressBar | None = None

    def progress(self, done: int, total: int, preview: torch.Tensor | None = None) -> None:
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total)
        image = None
        if self.previewer is not None and preview is not None:
            image = self.previewer.decode_latent_to_preview_image("JPEG", preview.float())
        self.bar.update_absolute(done, total, image)

    def check_interrupt(self) -> None:
        mm.throw_exception_if_processing_interrupted()


def vae(module: torch.nn.Module) -> JavisVAE:
    return JavisVAE(module)


# output type -> wrapper around what a core loader returns; input type -> what a core function is given
WRAP_OUTPUT = {"MODEL": model_patcher, "CLIP": clip, "VAE": vae, "JAVISDIT_AUDIO_VAE": audio_patcher}
UNWRAP_INPUT = {"MODEL": loaded_model, "JAVISDIT_AUDIO_VAE": loaded_audio}
