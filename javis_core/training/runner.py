"""JavisDiT++ training runner for the three stages (docs/official.md §8), on accelerate and peft.

    accelerate launch -m javis_core.training.runner --config training/configs/stage1.yaml
    accelerate launch --config_file training/accelerate/ddp.yaml -m javis_core.training.runner --config stage2.yaml
    javis-train --config training/configs/tiny_stage1.yaml train.max_steps=10   # one process, no launcher

Trailing ``key.sub=value`` arguments override the YAML (values parsed as YAML). Checkpoints go to
``<output_dir>/checkpoints/step_NNNNNNN`` (trainable weights, optimizer, LR schedule, RNG, data position, EMA);
``train.resume_from: latest`` (or a checkpoint dir) continues exactly where a run stopped. Final outputs:
stage 1 ``<output_dir>/transformer`` (t2a, ``save_pretrained``); stages 2-3 ``<output_dir>/lora`` (the adapter,
``transformer.load_lora_adapter(dir, prefix=None)``) and, with ``train.merge_lora``, ``<output_dir>/transformer``
(t2av with the adapter merged: ``load_pipeline(model=<output_dir>/transformer, ...)``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params, free_memory
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor
from tqdm.auto import tqdm

from ..codecs.text import DEFAULT_NEGATIVE_PROMPT
from ..codecs.audio import AudioCodec
from ..loaders.pipeline_loader import load_audioldm2_components, load_wan_components
from ..loaders.hub import resolve_weights
from . import cache as cache_lib
from .data import (
    BucketTable,
    ManifestDataset,
    collate,
    epoch_batches,
    read_manifest,
)
from .config import load_config
from .dpo import av_dpo_loss
from .objective import (
    cfg_dropout,
    clearer_picture,
    flow_matching_losses,
    sample_timesteps,
    total_loss,
    training_shift,
)
from .stages import (
    build_stage_model,
    reference_adapter,
    save_stage_outputs,
    trainable_state_dict,
)
from ..utils import parse_dtype

logger = logging.getLogger("javis_train")
DATA_KINDS = {0: "av", 1: "audio", 2: "av", 3: "dpo"}
PRETRAINED_FILES = ["config.json", "diffusion_pytorch_model*", "transformer/*"]  # Wan2.1 original or diffusers
TRAINABLE_FILE = "trainable.safetensors"

def make_lr_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict) -> torch.optim.lr_scheduler.LRScheduler:
    warmup, name = train_cfg["warmup_steps"], train_cfg["lr_schedule"]
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
    if not train_cfg["max_steps"]:
        raise ValueError(f"train.lr_schedule={name!r} decays over train.max_steps, which is not set")
    try:
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=train_cfg["max_steps"])
    except ValueError as error:
        raise ValueError(f"train.lr_schedule={name!r} is not a diffusers schedule: {error}") from None


# ---------------------------------------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Progress saved with every checkpoint: optimizer steps done and the data position."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    def state_dict(self) -> dict:
        return dict(step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a collective: every process must call it), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The named weights, whole and on the CPU, also under FSDP (every process must call it)."""
    params = dict(model.named_parameters())
    return {name: full_tensor(params[name].detach()).cpu() for name in names}


class EMA:
    """Official EMA (train_utils.update_ema in the official code): fp32 copy of the trainable parameters, fixed decay,
    updated after each step. Under FSDP each process keeps the shard of its own parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in trainable_state_dict(model).items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())  # by name: adapter switches (stage 3) move requires_grad around
        for name, shadow in self.shadow.items():
            shadow.lerp_(params[name].float(), 1 - self.decay)

    def full_shadow(self) -> dict[str, torch.Tensor]:
        """Whole tensors on the CPU (a collective under FSDP: every process must call it)."""
        return {name: full_tensor(value).cpu() for name, value in self.shadow.items()}

    def state_dict(self) -> dict:  # accelerate calls it on every process and writes it from the main one
        return {"decay": self.decay, "shadow": self.full_shadow()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            own = self.shadow[name]
            if isinstance(own, DTensor):
                self.shadow[name] = distribute_tensor(value.to(own.device), own.device_mesh, own.placements)
            else:
                self.shadow[name] = value.to(own.device)


class CsvLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def keep_until(self, step: int) -> None:
        """Drop the rows after ``step`` (left by a run that went on past the checkpoint being resumed)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= step]
        if step == 0 or len(kept) == 1:
            self.path.unlink()
            return
        with self.path.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)

    def write(self, step: int, metrics: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", *metrics])
            writer.writerow([step, *metrics.values()])


# ---------------------------------------------------------------------------------------------------- encoders
def load_encoders(config: dict, device: torch.device, stage: int) -> SimpleNamespace:
    dtype = parse_dtype(config["model"]["encoder_dtype"])
    text, video = load_wan_components(config["model"]["wan"] or config["model"]["pretrained"], dtype)
    audio_vae, vocoder = load_audioldm2_components(config["model"]["audioldm2"])
    # stage 0 keeps the audio codec for building a shared audio-video cache, but its batches need no audio latents
    encoders = SimpleNamespace(text=text, video=video if stage != 1 else None, audio=AudioCodec(audio_vae, vocoder),
                               encode_audio=stage != 0)  # fmt: skip
    for module in (encoders.text.model, encoders.video, encoders.audio):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    return encoders


@torch.no_grad()
def encode_batch(batch: dict, encoders: SimpleNamespace, max_length: int, device) -> dict:
    """Latents and text embeddings for a batch (decoded clips, or cached latents with a fresh audio sample)."""
    out = {}
    if "cached" in batch:
        cached = batch["cached"]
        out["embeds"], out["mask"] = cache_lib.pad_embeds(cached["text_embeds"], max_length, device)
        for suffix in ("", "_reject"):
            if f"audio_mean{suffix}" in cached:
                mean = torch.stack(cached[f"audio_mean{suffix}"]).to(device)
                std = torch.stack(cached[f"audio_std{suffix}"]).to(device)
                out[f"audio{suffix}"] = mean + std * torch.randn_like(mean)
            if f"video{suffix}" in cached:
                out[f"video{suffix}"] = torch.stack(cached[f"video{suffix}"]).to(device)
        return out
    embeds, mask = encoders.text.encode(batch["text"], max_length=max_length, device=device)
    out["embeds"], out["mask"] = embeds.float(), mask
    for suffix in ("", "_reject"):
        if f"audio{suffix}" in batch and encoders.encode_audio:
            out[f"audio{suffix}"] = encoders.audio.encode(batch[f"audio{suffix}"].to(device)).float()
        if f"video{suffix}" in batch and encoders.video is not None:
            out[f"video{suffix}"] = encoders.video.encode(batch[f"video{suffix}"].to(device)).float()
    return out


# ---------------------------------------------------------------------------------------------------- steps
def sft_step(model, inputs: dict, negative: tuple, bucket: tuple, config: dict, stage: int) -> tuple[torch.Tensor, dict]:
    """Stages 0-2: flow matching on video + audio (stage 0: video only, stage 1: audio only)."""
    height, width, num_frames = bucket
    video = inputs.get("video") if stage in (0, 2) else None
    audio = inputs["audio"] if stage != 0 else None
    reference = video if video is not None else audio
    shift = training_shift(height, width, num_frames, config["train"]["shift_scale"])
    timesteps = sample_timesteps(reference.shape[0], shift, device=reference.device)
    embeds, mask, _ = cfg_dropout(inputs["embeds"], inputs["mask"], *negative, config["train"]["cfg_dropout"])
    video_noise = torch.randn_like(video) if video is not None else None
    audio_noise = torch.randn_like(audio) if audio is not None else None
    video_timesteps, picture_only = None, None
    given = config["train"]["audio_given_video"]
    if video is not None and audio is not None and given["probability"] > 0:
        video_timesteps, picture_only = clearer_picture(timesteps, given["probability"], given["video_noise_scale"])
    losses = flow_matching_losses(model, video, audio, embeds, mask, timesteps, video_noise, audio_noise, num_frames,
                                  video_timesteps)  # fmt: skip
    if picture_only is not None:  # the model was told the audio's level: its video prediction is not trained there
        losses["video"] = losses["video"] * (~picture_only)
    loss = total_loss(losses)
    return loss, {f"loss_{k}": v.detach().mean().item() for k, v in losses.items()}


def dpo_step(model, unwrapped, inputs: dict, negative: tuple, bucket: tuple, config: dict) -> tuple[torch.Tensor, dict]:
    """Stage 3: [winners; losers] with one t and one noise per pair; reference = frozen stage-2 adapter."""
    height, width, num_frames = bucket
    pairs = inputs["audio"].shape[0]
    video = torch.cat([inputs["video"], inputs["video_reject"]])
    audio = torch.cat([inputs["audio"], inputs["audio_reject"]])
    shift = training_shift(height, width, num_frames, config["train"]["shift_scale"])
    timesteps = sample_timesteps(pairs, shift, device=audio.device).repeat(2)
    video_noise = torch.randn_like(inputs["video"]).repeat(2, 1, 1, 1, 1)
    audio_noise = torch.randn_like(inputs["audio"]).repeat(2, 1, 1, 1)
    embeds, mask = inputs["embeds"].repeat(2, 1, 1), inputs["mask"].repeat(2, 1)
    embeds, mask, _ = cfg_dropout(embeds, mask, *negative, config["train"]["cfg_dropout"])
    args = (video, audio, embeds, mask, timesteps, video_noise, audio_noise, num_frames)
    with reference_adapter(unwrapped):
        reference = flow_matching_losses(model, *args)
    policy = flow_matching_losses(model, *args)

    def halves(losses: dict) -> tuple[dict, dict]:
        return {k: v[:pairs] for k, v in losses.items()}, {k: v[pairs:] for k, v in losses.items()}

    loss, metrics = av_dpo_loss(*halves(policy), *halves(reference), config["dpo"]["beta"], config["dpo"]["sft_weight"])
    return loss, metrics


@contextlib.contextmanager
def fixed_draws(seed: int, device: torch.device) -> Iterator[None]:
    """Every random draw inside (latent samples, t, noise, CFG dropout) seeded the same; the RNG restored after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_dirs(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step_*"))


def _custom_saving(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def register_trainable_only_checkpoints(accelerator: Accelerator) -> None:
    """Checkpoints hold only the trainable weights (the frozen base is never rewritten), via accelerate's hooks."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            state = trainable_state_dict(accelerator.unwrap_model(models[0]))
            save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(Path(output_dir) / TRAINABLE_FILE))
        weights.clear()

    def load_hook(models, input_dir):
        model = accelerator.unwrap_model(models.pop())
        state = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        expected = set(trainable_state_dict(model))
        if set(state) != expected:
            raise RuntimeError(f"checkpoint {input_dir} holds other trainable weights than this stage's model")
        model.load_state_dict(state, strict=False)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, limit: int | None) -> Path:
    path = output_dir / "checkpoints" / f"step_{step:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process and limit:
        for old in checkpoint_dirs(output_dir)[:-limit]:
            shutil.rmtree(old)
    return path


# ---------------------------------------------------------------------------------------------------- model
def build_training_model(config: dict, pretrained: str | Path) -> torch.nn.Module:
    """The stage's model with the frozen base in ``model.frozen_dtype`` and the trainable weights in fp32.

    Every LoRA weight stays fp32, the frozen stage-3 reference adapter too: FSDP2 needs one dtype across the
    parameters that require grad, and switching adapters changes which ones do.
    """
    model_cfg = config["model"]
    model = build_stage_model(config["stage"], pretrained, model_cfg["audio_weights"], model_cfg["adapter"],
                              model_cfg["lora"], audio_pe_type=model_cfg["audio_pe_type"])  # fmt: skip
    frozen_dtype = parse_dtype(model_cfg["frozen_dtype"])
    for name, param in model.named_parameters():
        if not param.requires_grad and ".lora_" not in name:
            param.data = param.data.to(frozen_dtype)
    cast_training_params(model, torch.float32)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()
    return model


def export_model(
    accelerator: Accelerator, unwrapped: torch.nn.Module, config: dict, pretrained, trainable_names: list[str]
) -> torch.nn.Module:
    """The model to write the stage outputs from (call on every process). Under FSDP the trained weights are
    gathered whole into a fresh copy of the stage's model on the main process; otherwise it is the model itself."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return unwrapped
    trained = full_state_dict(unwrapped, trainable_names)
    if not accelerator.is_main_process:
        return unwrapped
    model = build_training_model(config, pretrained)
    model.load_state_dict(trained, strict=False)
    return model


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train JavisDiT++ (stage 1, 2 or 3) with accelerate.")
    parser.add_argument("--config", required=True, help="YAML config, e.g. training/configs/stage1.yaml")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    stage, output_dir = config["stage"], Path(config["output_dir"])
    train_cfg, data_cfg, model_cfg = config["train"], config["data"], config["model"]
    log_with, tensorboard_missing = train_cfg["log_with"], False
    if log_with == "auto":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            log_with, tensorboard_missing = None, True
    accelerator = Accelerator(
        mixed_precision=train_cfg["mixed_precision"] if train_cfg["mixed_precision"] != "fp32" else "no",
        gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"],
        log_with=log_with if log_with not in (None, "csv") else None,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,  # the official LR schedule counts optimizer steps, not processes
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")  # fmt: skip
    if tensorboard_missing and accelerator.is_main_process:
        logger.warning("TENSORBOARD IS NOT INSTALLED: metrics go to logs/metrics.csv only (pip install tensorboard)")
    set_seed(config["seed"])
    device = accelerator.device

    # --- model
    pretrained = model_cfg["pretrained"]
    if pretrained and not Path(pretrained).exists():  # a hub id: fetch only the DiT weights
        pretrained = resolve_weights(pretrained, PRETRAINED_FILES, "Wan2.1 DiT weights", "model.pretrained=")
    model = build_training_model(config, pretrained)
    if model_cfg["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_names = [name for name, param in model.named_parameters() if param.requires_grad]
    logger.info("stage %d: %s trainable parameters of %s", stage, f"{sum(p.numel() for p in trainable):,}",
                f"{sum(p.numel() for p in model.parameters()):,}")  # fmt: skip

    # --- data
    encoders = load_encoders(config, device, stage)
    kind = DATA_KINDS[stage]
    buckets = BucketTable({str(k): {int(f): v for f, v in frames.items()} for k, frames in data_cfg["buckets"].items()})
    rows, problems = read_manifest(data_cfg["manifest"], kind, buckets, data_cfg["text_column"], data_cfg["fps"],
                                   data_cfg["probe_media"])  # fmt: skip
    if problems and accelerator.is_main_process:
        logger.warning("%d manifest row(s) left out before training (see the warnings above)", len(problems))
    dataset, fixed_buckets = ManifestDataset(rows, kind, fps=data_cfg["fps"]), kind == "dpo"
    if data_cfg["cache_dir"]:
        cache_dir = Path(data_cfg["cache_dir"])
        if not (cache_dir / cache_lib.CACHE_MANIFEST).exists() and accelerator.is_main_process:
            cache_lib.build_cache(rows, kind, buckets, encoders, cache_dir, data_cfg["fps"], config["seed"],
                                  data_cfg["text_max_length"], device)  # fmt: skip
        accelerator.wait_for_everyone()
        rows = cache_lib.read_cache(cache_dir)
        dataset, fixed_buckets = cache_lib.CachedDataset(rows), True
    with torch.no_grad():
        negative = encoders.text.encode([data_cfg["negative_prompt"]], max_length=data_cfg["text_max_length"],
                                        device=device)  # fmt: skip
        negative = (negative[0].float(), negative[1])
    if data_cfg["cache_dir"]:  # batches come from the cache from here on: the encoders (umT5 alone ~11 GB) can go
        encoders = None
        free_memory()

    # --- optimisation
    optimizer = torch.optim.AdamW(trainable, lr=train_cfg["lr"], betas=tuple(train_cfg["betas"]),
                                  weight_decay=train_cfg["weight_decay"], eps=train_cfg["eps"])  # fmt: skip
    scheduler = make_lr_scheduler(optimizer, train_cfg)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them with sharded ones
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    ema = EMA(unwrapped, train_cfg["ema_decay"]) if train_cfg["ema_decay"] else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if _custom_saving(accelerator):
        register_trainable_only_checkpoints(accelerator)

    resume = train_cfg["resume_from"]
    if resume:
        path = checkpoint_dirs(output_dir)[-1] if resume == "latest" and checkpoint_dirs(output_dir) else (
            None if resume == "latest" else Path(resume))  # fmt: skip
        if path is not None:
            accelerator.load_state(str(path))
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch,
                        state.batch_in_epoch)  # fmt: skip

    def batches_for(epoch: int) -> list:
        return epoch_batches(rows, buckets, config["seed"], epoch, "dpo" if fixed_buckets else kind,
                             accelerator.num_processes, accelerator.process_index)  # fmt: skip

    steps_per_epoch = math.ceil(len(batches_for(0)) / train_cfg["gradient_accumulation_steps"])
    if steps_per_epoch == 0:
        raise ValueError(f"no complete batch: {len(rows)} usable rows for buckets {data_cfg['buckets']}")
    max_steps = train_cfg["max_steps"] or steps_per_epoch * train_cfg["epochs"]
    if accelerator.is_main_process and log_with not in (None, "csv"):
        accelerator.init_trackers("javisdit_train", config={"stage": stage, "lr": train_cfg["lr"]})
    csv_log = CsvLog(output_dir / "logs" / "metrics.csv")
    if accelerator.is_main_process:
        csv_log.keep_until(state.step)  # a resumed (or restarted) run rewrites the steps after its checkpoint
    read_skips: list[str] = []  # samples whose files turned out unreadable at read time
    progress = tqdm(total=max_steps, initial=state.step, disable=not accelerator.is_main_process, desc=f"stage {stage}")
    started = time.time()

    while state.step < max_steps and state.epoch < train_cfg["epochs"]:
        remaining = batches_for(state.epoch)[state.batch_in_epoch :]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=remaining, collate_fn=collate, num_workers=data_cfg["num_workers"],
            generator=torch.Generator().manual_seed(config["seed"] + state.epoch),  # keeps the global RNG untouched
        )  # fmt: skip
        finished_epoch = True
        for batch in loader:
            state.batch_in_epoch += 1
            read_skips += batch["errors"]
            if batch["size"] == 0:
                continue
            with fixed_draws(config["seed"], device) if train_cfg["fixed_noise"] else contextlib.nullcontext():
                inputs = encode_batch(batch, encoders, data_cfg["text_max_length"], device)
                with accelerator.accumulate(model):
                    if stage == 3:
                        loss, metrics = dpo_step(model, unwrapped, inputs, negative, batch["bucket"], config)
                    else:
                        loss, metrics = sft_step(model, inputs, negative, batch["bucket"], config, stage)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and train_cfg["grad_clip"]:
                        accelerator.clip_grad_norm_(trainable, train_cfg["grad_clip"])
                    step_lr = optimizer.param_groups[0]["lr"]  # this step's rate (before the schedule moves on)
                    optimizer.step()
                    scheduler.step() if accelerator.sync_gradients else None
                    optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            if ema is not None:
                ema.update(unwrapped)
            metrics = {"loss": loss.detach().item(), **metrics}
            averaged = accelerator.reduce(torch.tensor(list(metrics.values()), device=device), reduction="mean")
            metrics = {**dict(zip(metrics, averaged.tolist())), "lr": step_lr}  # every process's mean
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
            if accelerator.is_main_process and state.step % train_cfg["log_every"] == 0:
                csv_log.write(state.step, metrics)
                if log_with not in (None, "csv"):
                    accelerator.log(metrics, step=state.step)
            if state.step % train_cfg["checkpoint_every"] == 0 or state.step == max_steps:
                save_checkpoint(accelerator, output_dir, state.step, train_cfg["checkpoints_total_limit"])
            if state.step >= max_steps:
                finished_epoch = state.batch_in_epoch >= len(batches_for(state.epoch))
                break
        if finished_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    progress.close()

    accelerator.wait_for_everyone()
    read_skips = sorted(set(gather_object(read_skips)))
    ema_weights = ema.full_shadow() if ema is not None else None
    final = export_model(accelerator, unwrapped, config, pretrained, trainable_names)
    if accelerator.is_main_process:
        if ema_weights is not None:
            save_file({k: v.contiguous() for k, v in ema_weights.items()}, str(output_dir / "ema.safetensors"))
        written = save_stage_outputs(final, stage, output_dir, train_cfg["merge_lora"])
        summary = {"stage": stage, "steps": state.step, "seconds": round(time.time() - started, 2),
                   "outputs": [str(p) for p in written], "rows_left_out": len(problems) + len(read_skips),
                   "skipped_rows": [str(p) for p in problems], "skipped_at_read_time": read_skips}  # fmt: skip
        if read_skips:
            logger.warning("%d sample(s) left out at read time (unreadable or too short files): %s", len(read_skips),
                           "; ".join(read_skips[:5]))  # fmt: skip
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.info("done: %s", summary)
    accelerator.wait_for_everyone()  # every process leaves the process group together (gloo aborts otherwise)
    accelerator.end_training()
    return 0


def cli() -> int:
    """``main`` with user errors (missing weights or files, bad manifests or settings) as one line, exit code 2."""
    from ..loaders.hub import WeightsNotFoundError

    try:
        return main()
    except (WeightsNotFoundError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
