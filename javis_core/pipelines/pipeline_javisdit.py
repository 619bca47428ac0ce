"""`JavisDiTPipeline`: text to a short video with its own synchronized soundtrack (JavisDiT++).

Components: the JavisDiT++ transformer, a flow-matching scheduler, umT5 (text), the Wan2.1 VAE (video),
AudioLDM2's mel VAE and HiFi-GAN vocoder (audio). Sampling follows the official rectified-flow loop
(docs/official.md §5): shifted sigmas from the requested size, one batched forward for prompt and negative prompt,
classifier-free guidance (one scale for both modalities by default), Euler steps from noise (sigma 1) to data (sigma 0).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import PreTrainedModel

from ..codecs.audio import AudioCodec, audio_latent_shape, num_audio_samples
from .conditioning import LatentCondition, MaskedSampling
from .schedule import make_scheduler, official_shift, partial_sigmas
from .requests import check_mode_supported, has_audio, has_video
from .requests import check_request as _check_request
from .requests import resolve_size as _resolve_size
from .sizes import FPS, SAMPLE_RATE
from .speed import cache_config, get_preset
from ..codecs.text import DEFAULT_NEGATIVE_PROMPT, VIDEO_ONLY_NEGATIVE_PROMPT, TextEncoder
from ..models.transformer import JavisDiTTransformer3DModel
from ..codecs.video import VideoCodec, spatial_stride_of, video_latent_shape

OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class JavisDiTPipelineOutput(BaseOutput):
    """``frames``: (B, T, H, W, 3) in [0, 1] (numpy for "np", torch for "pt"), or video latents for "latent";
    ``audio``: (B, N) waveform at ``sample_rate`` (or audio latents); either is None when its mode is off."""

    frames: np.ndarray | torch.Tensor | None
    audio: np.ndarray | torch.Tensor | None
    sample_rate: int = SAMPLE_RATE
    fps: int = FPS
    report: tuple[str, ...] = ()  # what was done to conditioning media (resized, resampled, trimmed, ...)


def _guided(velocity: torch.Tensor, scale: float, do_cfg: bool) -> torch.Tensor:
    """Classifier-free guidance on a [cond; uncond] batch: v_u + s (v_c - v_u) (docs/official.md §5)."""
    velocity = velocity.float()
    if not do_cfg:
        return velocity
    cond, uncond = velocity.chunk(2)
    return uncond + scale * (cond - uncond)


class JavisDiTPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae->audio_vae->vocoder"
    _optional_components = ["text_encoder", "tokenizer", "vae", "audio_vae", "vocoder"]
    # "denoised": the step's estimate of the clean video latents (x0), what a live preview shows
    _callback_tensor_inputs = ["latents", "audio_latents", "denoised", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        transformer: JavisDiTTransformer3DModel,
        scheduler,
        text_encoder: PreTrainedModel | None = None,  # umT5 (a saved pipeline may bring another encoder)
        tokenizer=None,
        vae: ModelMixin | None = None,  # AutoencoderKLWan, or a codec with its interface
        audio_vae: ModelMixin | None = None,  # AutoencoderKL
        vocoder: PreTrainedModel | ModelMixin | None = None,  # SpeechT5HifiGan
    ):
        super().__init__()
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            vae=vae,
            audio_vae=audio_vae,
            vocoder=vocoder,
        )
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def interrupt_generation(self) -> None:
        """Stop the running denoising loop after the current step (safe to call from another thread)."""
        self._interrupt = True

    # ------------------------------------------------------------------ text
    def encode_prompt(
        self, prompts: list[str], device: torch.device, max_sequence_length: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """umT5 features (B, L, 4096) with padded positions zeroed, and the token mask (B, L)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this pipeline has no text encoder: pass prompt_embeds / negative_prompt_embeds")
        encoder = TextEncoder(self.text_encoder, self.tokenizer)
        return encoder.encode(prompts, max_sequence_length, device=device, dtype=self.transformer.dtype)

    # ------------------------------------------------------------------ validation
    @staticmethod
    def check_request(prompt, mode, num_inference_steps, guidance_scale, audio_guidance_scale, shift,
                      prompt_embeds=None, negative_prompt=None) -> None:  # fmt: skip
        """Validate what a user asks for before any weights are needed (``javis_core.pipelines.requests``)."""
        _check_request(prompt, mode, num_inference_steps, guidance_scale, audio_guidance_scale, shift,
                       prompt_embeds=prompt_embeds, negative_prompt=negative_prompt)  # fmt: skip

    def check_inputs(self, prompt, prompt_embeds, mode, num_inference_steps, guidance_scale, audio_guidance_scale,
                     shift, output_type, callback_tensor_inputs) -> None:  # fmt: skip
        self.check_request(prompt, mode, num_inference_steps, guidance_scale, audio_guidance_scale, shift,
                           prompt_embeds)  # fmt: skip
        check_mode_supported(mode, self.transformer.config.model_type)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)} (got {output_type!r})")
        unknown = set(callback_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only hold {self._callback_tensor_inputs}")

    @staticmethod
    def resolve_size(resolution, aspect_ratio, height, width, duration, num_frames) -> tuple[int, int, int]:
        """(height, width, num_frames) from the official tables, or explicit values (decoded rounded up to 16)."""
        return _resolve_size(resolution, aspect_ratio, height, width, duration, num_frames)

    # ------------------------------------------------------------------ latents
    def latent_shapes(self, height: int, width: int, num_frames: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-sample shapes of the video and audio noise for a request: what ``latents`` and ``audio_latents``
        must look like, without the batch dimension."""
        video = video_latent_shape(num_frames, height, width, self.transformer.config.in_channels,
                                   spatial_stride_of(self.vae))  # fmt: skip
        return video, audio_latent_shape(num_frames)

    @staticmethod
    def sampling_sigmas(num_inference_steps: int, height: int, width: int, num_frames: int,
                        shift: float | None = None, denoise: float = 1.0) -> list[float]:  # fmt: skip
        """The noise levels the sampler steps from, one per step (the official shifted schedule for the request
        size and length unless ``shift`` is given); after the last step the latents are clean (sigma 0)."""
        return partial_sigmas(num_inference_steps, shift or official_shift(height, width, num_frames), denoise)

    def _prepare(self, given, shape, generator, device, name, start_sigma: float | None) -> torch.Tensor:
        """Fresh float32 noise; or the given latents as the starting noise (their length/size may differ from the
        request's); or, with ``denoise`` < 1 (``start_sigma``), the given clean latents noised to that sigma."""
        if given is not None and (given.ndim != len(shape) or tuple(given.shape[:2]) != tuple(shape[:2])):
            raise ValueError(f"{name} must have shape {tuple(shape)} for this request (got {tuple(given.shape)})")
        if start_sigma is None:
            if given is None:
                return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
            return given.to(device=device, dtype=torch.float32)
        if given is None:
            raise ValueError(f"denoise < 1 refines existing latents: pass {name}")
        clean = given.to(device=device, dtype=torch.float32)
        noise = randn_tensor(clean.shape, generator=generator, device=device, dtype=torch.float32)
        return start_sigma * noise + (1 - start_sigma) * clean

    @staticmethod
    def _masking(video_condition, audio_condition, latents, audio_latents, compat) -> dict[str, MaskedSampling]:
        """Per-modality masking for the loop: none without conditions; with any, every generated modality is
        masked (the official sampler builds all-ones masks for the unconditioned one)."""
        if video_condition is None and audio_condition is None:
            return {}
        masking = {}
        given = (("video", video_condition, latents), ("audio", audio_condition, audio_latents))
        for name, condition, current in given:
            if current is None:
                if condition is not None:
                    raise ValueError(f"{name}_condition was given but this mode does not generate {name}")
                continue
            if condition is None:
                condition = LatentCondition.empty(tuple(current.shape))
            elif condition.latents.shape[0] == 1 < current.shape[0]:  # one reference for every sample
                repeat = current.shape[0]
                condition = LatentCondition(condition.latents.expand(repeat, *condition.latents.shape[1:]),
                                            condition.mask.expand(repeat, -1), condition.written.expand(repeat, -1))
            condition.check(tuple(current.shape), f"{name}_condition")
            masking[name] = MaskedSampling(condition.to(current.device), draw_every_step=compat)
        return masking

    # ------------------------------------------------------------------ decoding
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised Wan latents -> frames (B, T, H, W, 3) in [0, 1], float32."""
        if self.vae is None:
            raise ValueError("this pipeline has no video VAE: use output_type='latent'")
        return ((VideoCodec(self.vae).decode(latents) + 1) / 2).permute(0, 2, 3, 4, 1)

    def decode_audio(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """AudioLDM2 latents -> waveform (B, num_samples) float32 (the decoded mel is longer; docs/official.md §3.2)."""
        if self.audio_vae is None or self.vocoder is None:
            raise ValueError("this pipeline has no audio VAE/vocoder: use output_type='latent'")
        return AudioCodec(self.audio_vae, self.vocoder).decode(latents, num_samples)

    def _use_preset_cache(self, settings) -> None:
        """Enable the preset's cache for one call (and drop one an earlier, failed call left); a cache the user
        enabled with ``transformer.enable_cache`` is kept and used instead."""
        if getattr(self, "_preset_cache_on", False):
            self.transformer.disable_cache()
            self._preset_cache_on = False
        config = cache_config(settings) if settings is not None else None
        if config is not None and not self.transformer.is_cache_enabled:
            self.transformer.enable_cache(config)
            self._preset_cache_on = True

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        mode: str = "t2av",
        resolution: str = "240p",
        aspect_ratio: str = "9:16",
        height: int | None = None,
        width: int | None = None,
        duration: float | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 5.0,
        audio_guidance_scale: float | None = None,
        shift: float | None = None,
        scheduler: str | None = None,
        denoise: float = 1.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        audio_latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        attention_kwargs: dict | None = None,
        preset: str | None = None,
        video_condition: LatentCondition | None = None,
        audio_condition: LatentCondition | None = None,
        compat: bool = False,
        video=None,
        audio=None,
        image=None,
        strength: float = 0.0,
        extend_to: float | None = None,
    ) -> JavisDiTPipelineOutput | tuple:
        r"""
        Generate a sounding video (``mode="t2av"``), audio only (``"t2a"``) or video only (``"t2v"``).

        Args:
            prompt / negative_prompt: text; the negative prompt defaults to the official one (also the
                unconditional text of classifier-free guidance).
            resolution / aspect_ratio: "240p" | "360p" | "480p" and an official "H:W" ratio ("9:16" is landscape)
                or "landscape"/"portrait"/"square"; or explicit ``height``/``width`` (decoded rounded up to 16).
            duration: 2-5 seconds (33/49/65/81 frames at 16 fps), or ``num_frames`` (4k+1).
            guidance_scale: CFG scale for video (and for audio unless ``audio_guidance_scale`` is given).
            shift: override of the resolution/length timestep shift (default: the official formula).
            scheduler: "euler" (official) or "unipc"; default: the pipeline's scheduler.
            latents / audio_latents: initial noise (float32) instead of drawing it from ``generator``; with
                ``denoise`` < 1 the clean latents to refine (they are noised to the matching sigma first).
            denoise: fraction of the schedule to run (1 = from pure noise), as ComfyUI's KSampler.
            video_condition / audio_condition: reference latents with a per-latent-frame mask
                (`javis_core.pipelines.conditioning.LatentCondition`): written into the initial noise, frames with
                mask m kept at the reference while t > 1000 m (the official replacement conditioning; m = 0 keeps them
                throughout, m = 1 frees them). ``compat``: draw the crossover noise at every step for each modality,
                as the official sampler does, so a seeded run reproduces its random stream.
            video / audio / image: media to condition on (a path, an array, or `media_inputs.MediaInput` with
                its own strength and time window): ``video`` keeps the picture and generates the sound, ``audio``
                keeps the sound and generates the picture, ``image`` is the first frame. They are resized /
                resampled / trimmed to the request (``output.report`` says what was done); the size and length
                follow the input unless given. Held media with strength 0 come back as given, not VAE round trips.
            strength: edit ratio of the held media (0 = kept exactly, 1 = only the starting noise).
            extend_to: seconds; chain windows (each continuing the last latent frames and the sound of the clip
                so far) until the clip is that long; with ``video`` the given clip (with its sound) is continued.
            output_type: "np", "pt" or "latent".
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` after every step; it may
                replace tensors named in ``callback_on_step_end_tensor_inputs``. Setting ``pipe._interrupt`` (or
                calling ``interrupt_generation``) stops the loop after the current step.
            attention_kwargs: passed to the transformer; ``{"scale": s}`` sets the strength of loaded LoRAs.
            preset: "exact" (the official 50 Euler steps), "fast" or "fastest" (approximations: fewer UniPC steps,
                and for "fastest" a first-block cache during this call); sets ``num_inference_steps`` and
                ``scheduler`` where they are not given. See ``javis_core.pipelines.speed.PRESETS``.
        """
        if video is not None or audio is not None or image is not None or extend_to is not None:
            from .conditioned import generate_conditioned

            call = {name: value for name, value in locals().items() if name in _PLAIN_CALL_ARGUMENTS}
            return generate_conditioned(self, call, video, audio, image, strength, extend_to)
        settings = get_preset(preset) if preset is not None else None
        if num_inference_steps is None:
            num_inference_steps = settings.num_inference_steps if settings else 50
        scheduler = scheduler or (settings.scheduler if settings else None)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(prompt, prompt_embeds, mode, num_inference_steps, guidance_scale, audio_guidance_scale,
                          shift, output_type, callback_on_step_end_tensor_inputs)  # fmt: skip
        height, width, num_frames = self.resolve_size(resolution, aspect_ratio, height, width, duration, num_frames)
        num_inference_steps = int(num_inference_steps)  # the check also takes 50.0
        audio_guidance_scale = guidance_scale if audio_guidance_scale is None else audio_guidance_scale
        want_video, want_audio = has_video(mode), has_audio(mode)
        device = self._execution_device
        self._interrupt = False

        # 1. Text: [cond; uncond] share one batched forward (docs/official.md §5).
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self.encode_prompt(prompts, device, max_sequence_length)
        batch = prompt_embeds.shape[0]
        if prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.long, device=device)
        do_cfg = guidance_scale != 1 or (want_audio and audio_guidance_scale != 1)
        if do_cfg and negative_prompt_embeds is None:
            default = VIDEO_ONLY_NEGATIVE_PROMPT if mode == "t2v" else DEFAULT_NEGATIVE_PROMPT
            negative = negative_prompt if negative_prompt is not None else default
            negatives = [negative] * batch if isinstance(negative, str) else list(negative)
            if len(negatives) != batch:
                raise ValueError(f"negative_prompt has {len(negatives)} entries for {batch} prompts")
            negative_prompt_embeds, negative_prompt_attention_mask = self.encode_prompt(
                negatives, device, max_sequence_length
            )
        if do_cfg and negative_prompt_attention_mask is None:
            negative_prompt_attention_mask = torch.ones(negative_prompt_embeds.shape[:2], dtype=torch.long)
        if num_videos_per_prompt > 1:
            repeat = lambda x: None if x is None else x.repeat_interleave(num_videos_per_prompt, dim=0)  # noqa: E731
            prompt_embeds, prompt_attention_mask = repeat(prompt_embeds), repeat(prompt_attention_mask)
            negative_prompt_embeds = repeat(negative_prompt_embeds)
            negative_prompt_attention_mask = repeat(negative_prompt_attention_mask)
            batch *= num_videos_per_prompt

        # 2. Schedule: the official shifted sigmas, run on a diffusers flow-matching scheduler per modality.
        sigmas = self.sampling_sigmas(num_inference_steps, height, width, num_frames, shift, denoise)
        start_sigma = sigmas[0] if denoise < 1 else None

        # 3. Noise: video first, then audio (the official drawing order).
        video_shape, audio_shape = ((batch, *shape) for shape in self.latent_shapes(height, width, num_frames))
        latents = self._prepare(latents, video_shape, generator, device, "latents", start_sigma) if want_video else None
        audio_latents = (
            self._prepare(audio_latents, audio_shape, generator, device, "audio_latents", start_sigma)
            if want_audio
            else None
        )
        masking = self._masking(video_condition, audio_condition, latents, audio_latents, compat)
        if "video" in masking:
            latents = masking["video"].condition.write_into(latents)
        if "audio" in masking:
            audio_latents = masking["audio"].condition.write_into(audio_latents)
        draw = lambda shape: randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)  # noqa: E731
        video_scheduler = make_scheduler(scheduler) if scheduler else copy.deepcopy(self.scheduler)
        audio_scheduler = copy.deepcopy(video_scheduler)
        for sched in (video_scheduler, audio_scheduler):
            sched.set_timesteps(sigmas=np.array(sigmas, dtype=np.float32), device=device)
        timesteps = video_scheduler.timesteps

        if do_cfg and negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]:
            raise ValueError(
                f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} must match prompt_embeds "
                f"{tuple(prompt_embeds.shape)} except in the batch dimension"
            )
        text, text_mask = prompt_embeds.to(device), prompt_attention_mask.to(device)
        if do_cfg:
            text = torch.cat([text, negative_prompt_embeds.to(device)])
            text_mask = torch.cat([text_mask, negative_prompt_attention_mask.to(device)])
        copies = 2 if do_cfg else 1

        # 4. Denoising loop (a cache left half-way by an interrupted call starts afresh).
        self._use_preset_cache(settings)
        self.transformer._reset_stateful_cache()
        with self.progress_bar(total=len(timesteps)) as progress:
            for step, t in enumerate(timesteps):
                if self.interrupt:
                    break
                video_in, audio_in = latents, audio_latents
                if "video" in masking:  # official order: video's noise is drawn first
                    video_in = masking["video"].model_input(latents, t, draw)
                if "audio" in masking:
                    audio_in = masking["audio"].model_input(audio_latents, t, draw)
                # One batched [cond; uncond] call a step: diffusers' caches keep their state under this name.
                context = dict(step_index=step, num_inference_steps=len(timesteps), sigma=sigmas[step])
                with self.transformer.cache_context("cond_uncond" if do_cfg else "cond", **context):
                    out = self.transformer(
                        video_in.repeat(copies, 1, 1, 1, 1) if want_video else None,
                        t.expand(batch * copies).to(device),
                        text,
                        audio_hidden_states=audio_in.repeat(copies, 1, 1, 1) if want_audio else None,
                        encoder_attention_mask=text_mask,
                        num_frames=num_frames,
                        attention_kwargs=attention_kwargs,
                    )
                denoised = None
                if want_video:
                    velocity = _guided(out.sample, guidance_scale, do_cfg)
                    if "denoised" in callback_on_step_end_tensor_inputs:
                        denoised = latents - sigmas[step] * velocity
                    stepped = video_scheduler.step(velocity, t, latents, return_dict=False)[0]
                    latents = masking["video"].after_step(stepped, latents) if "video" in masking else stepped
                if want_audio:
                    velocity = _guided(out.audio_sample, audio_guidance_scale, do_cfg)
                    stepped = audio_scheduler.step(velocity, t, audio_latents, return_dict=False)[0]
                    if "audio" in masking:
                        stepped = masking["audio"].after_step(stepped, audio_latents)
                    audio_latents = stepped

                if callback_on_step_end is not None:
                    available = {
                        "latents": latents, "audio_latents": audio_latents, "denoised": denoised,
                        "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds,
                    }  # fmt: skip
                    kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    updates = callback_on_step_end(self, step, t, kwargs) or {}
                    latents = updates.get("latents", latents)
                    audio_latents = updates.get("audio_latents", audio_latents)
                progress.update()

        self._use_preset_cache(None)

        # 5. Decode.
        if output_type == "latent":
            frames, audio = latents, audio_latents
        else:
            frames = self.decode_video(latents) if want_video else None
            audio = self.decode_audio(audio_latents, num_audio_samples(num_frames)) if want_audio else None
            if output_type == "np":
                frames = None if frames is None else frames.cpu().numpy()
                audio = None if audio is None else audio.cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, audio
        return JavisDiTPipelineOutput(frames=frames, audio=audio)


_PLAIN_CALL_ARGUMENTS = [name for name in inspect.signature(JavisDiTPipeline.__call__).parameters
                         if name not in ("self", "video", "audio", "image", "strength", "extend_to",
                                         "video_condition", "audio_condition")]  # fmt: skip
