"""The ComfyUI node pack without ComfyUI: schemas (specs), example workflows, and each node's function on the
tiny random pipeline (IMAGE/AUDIO shapes and ranges, progress every step, interruption)."""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from comfy_nodes import core
from comfy_nodes.specs import LATENTS, NODE_SPECS, SAMPLER, Param
from javis_core.loaders.hub import JAVISDIT_REPO, WeightsNotFoundError
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.schedule import partial_sigmas, official_shift, official_sigmas
from javis_core.codecs.text import TextEncoder
from javis_core.tiny import save_tiny_pipeline
from javis_core.models.transformer import JavisDiTTransformer3DModel

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "comfy_nodes" / "example_workflows"
NATIVE_NODES = {"CreateVideo": {"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO"}, "SaveVideo": {"video": "VIDEO"}}
NATIVE_OUTPUTS = {"CreateVideo": ["VIDEO"], "SaveVideo": []}
SPECS = {spec.node_id: spec for spec in NODE_SPECS}
SIZE = {"resolution": "custom", "aspect_ratio": "landscape", "width": 96, "height": 64, "num_frames": 9}


class RecordingHooks:
    """Stands in for ComfyUI's ProgressBar + interruption check; raises on the ``interrupt_at``-th check."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.progress_calls: list[tuple[int, int]] = []
        self.checks = 0
        self.interrupt_at = interrupt_at

    def progress(self, done: int, total: int) -> None:
        self.progress_calls.append((done, total))

    def check_interrupt(self) -> None:
        self.checks += 1
        if self.checks == self.interrupt_at:
            raise InterruptedError("processing interrupted")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("javisdit") / "tiny")


@pytest.fixture(scope="module")
def nodes(tiny_dir):
    """Every loader node run on the tiny pipeline dir given as a path."""
    path = str(tiny_dir)
    return {
        "model": core.load_model("", path, dtype="fp32", device="cpu")[0],
        "text_encoder": core.load_text_encoder("", path, dtype="fp32", device="cpu")[0],
        "video_vae": core.load_video_vae("", path, device="cpu")[0],
        "audio_vae": core.load_audio_vae("", path, device="cpu")[0],
    }


@pytest.fixture(scope="module")
def conditioning(nodes):
    return core.encode_text(nodes["text_encoder"], "a dog barks in a park", "blurry, noisy")[0]


@pytest.fixture
def fake_folder_paths(monkeypatch, tiny_dir):
    """ComfyUI's folder_paths module with tiny_dir's parent registered as the javisdit folder."""
    module = types.SimpleNamespace(get_folder_paths=lambda name: [str(tiny_dir.parent)] if name == "javisdit" else [])
    monkeypatch.setitem(sys.modules, "folder_paths", module)


def count_forwards(model: core.Placed) -> list[int]:
    calls = []
    model.module.register_forward_hook(lambda *_: calls.append(1))
    return calls


# ---------------------------------------------------------------------------------------------------- schemas
def test_node_ids_are_unique_and_prefixed():
    assert len(SPECS) == len(NODE_SPECS) == 9
    assert all(node_id.startswith("JavisDiT") for node_id in SPECS)


@pytest.mark.parametrize("spec", NODE_SPECS, ids=lambda spec: spec.node_id)
def test_schema_inputs_match_the_function_they_run(spec):
    ids = [p.id for p in spec.inputs]
    assert len(set(ids)) == len(ids)
    parameters = inspect.signature(spec.run).parameters
    assert [name for name in parameters if name != "hooks"] == ids  # ComfyUI passes inputs by these names
    assert ("hooks" in parameters) == spec.step_hooks
    for p in spec.inputs:
        if p.type == "COMBO":
            assert p.default in p.choices()
        elif p.type in ("INT", "FLOAT"):
            assert p.min <= p.default <= p.max
        elif not p.is_widget:
            assert p.default is None


def test_schema_types():
    types_of = lambda spec: ({p.id: p.type for p in spec.inputs}, [o.type for o in spec.outputs])
    assert types_of(SPECS["JavisDiTVideoDecode"]) == ({"video_vae": "JAVISDIT_VIDEO_VAE", "latents": LATENTS},
                                                      ["IMAGE", "FLOAT"])  # fmt: skip
    assert types_of(SPECS["JavisDiTAudioDecode"])[1] == ["AUDIO"]
    sampler_inputs, sampler_outputs = types_of(SAMPLER)
    assert sampler_inputs == {
        "model": "JAVISDIT_MODEL", "conditioning": "JAVISDIT_CONDITIONING", "latents": LATENTS, "seed": "INT",
        "steps": "INT", "video_cfg": "FLOAT", "audio_cfg": "FLOAT", "shift": "FLOAT", "denoise": "FLOAT",
        "scheduler": "COMBO",
    }  # fmt: skip
    assert sampler_outputs == [LATENTS] and SAMPLER.step_hooks
    seed = next(p for p in SAMPLER.inputs if p.id == "seed")
    assert seed.control_after_generate and seed.max >= 2**32
    duration = next(p for p in SPECS["JavisDiTEmptyLatents"].inputs if p.id == "duration")
    assert (duration.min, duration.max) == (2.0, 5.0)


def test_model_dropdown_lists_the_model_folder_then_the_hub_id(fake_folder_paths, tiny_dir):
    (tiny_dir.parent / "notes.txt").write_text("files are not models")
    model = next(p for p in SPECS["JavisDiTModelLoader"].inputs if p.id == "model")
    assert model.choices() == ["tiny", JAVISDIT_REPO]
    assert core.resolve_source("tiny", "", [], "model") == tiny_dir
    assert core.resolve_source("tiny", str(tiny_dir.parent), [], "model") == tiny_dir.parent  # the override wins


def test_model_dropdown_without_comfyui_offers_the_hub_id():
    assert core.model_choices(JAVISDIT_REPO) == [JAVISDIT_REPO]


# ---------------------------------------------------------------------------------------------------- workflows
def _output_types(class_type: str) -> list[str]:
    return NATIVE_OUTPUTS.get(class_type) or [o.type for o in SPECS[class_type].outputs]


def test_api_workflow_is_a_valid_text_to_sounding_video_graph():
    workflow = json.loads((WORKFLOWS / "javisdit_t2av_api.json").read_text())
    classes = {node["class_type"] for node in workflow.values()}
    assert classes == set(SPECS) | {"CreateVideo", "SaveVideo"}
    for node_id, node in workflow.items():
        spec = SPECS.get(node["class_type"])
        expected = NATIVE_NODES.get(node["class_type"]) or {p.id: p.type for p in spec.inputs}
        if spec is not None:
            assert set(node["inputs"]) == set(expected), node_id
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link [source node, output index]
                source = workflow[value[0]]["class_type"]
                assert _output_types(source)[value[1]] == expected[name], f"{node_id}.{name}"
            elif spec is not None:
                p: Param = next(p for p in spec.inputs if p.id == name)
                assert p.is_widget, f"{node_id}.{name} must be linked"
                assert value in p.choices() if p.type == "COMBO" else p.min is None or p.min <= value <= p.max


def test_ui_workflow_matches_the_api_workflow():
    api = json.loads((WORKFLOWS / "javisdit_t2av_api.json").read_text())
    ui = json.loads((WORKFLOWS / "javisdit_t2av.json").read_text())
    assert {str(node["id"]): node["type"] for node in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    links = {(str(src), src_slot, str(dst), dst_slot) for _, src, src_slot, dst, dst_slot, _ in ui["links"]}
    by_id = {str(node["id"]): node for node in ui["nodes"]}
    api_links = set()
    for node_id, node in api.items():
        slots = [i["name"] for i in by_id[node_id]["inputs"]]
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                api_links.add((value[0], value[1], node_id, slots.index(name)))
    assert links == api_links
    for node_id, node in api.items():
        spec = SPECS.get(node["class_type"])
        if spec is None:
            continue
        widget_values = [node["inputs"][p.id] for p in spec.inputs if p.is_widget]
        values = [v for v in by_id[node_id]["widgets_values"] if v not in ("fixed", "randomize")]
        assert values == widget_values, node_id


# ---------------------------------------------------------------------------------------------------- loaders
def test_loaders_build_the_components(nodes):
    assert isinstance(nodes["model"].module, JavisDiTTransformer3DModel)
    assert nodes["model"].module.dtype == torch.float32 and nodes["model"].device == torch.device("cpu")
    assert isinstance(nodes["text_encoder"].module, TextEncoder)
    assert isinstance(nodes["video_vae"].module, core.VideoCodec)
    assert isinstance(nodes["audio_vae"].module, core.AudioCodec)
    assert not any(p.requires_grad for p in nodes["model"].module.parameters())


def test_loader_finds_a_model_in_the_model_folder(fake_folder_paths):
    (placed,) = core.load_audio_vae("tiny", "", device="cpu")
    assert placed.module.sample_rate == 16000


def test_loader_errors_say_what_is_missing(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="path_or_hub_id"):
        core.load_model("", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="has no vae/ \\+ vocoder/"):
        core.load_audio_vae("", str(tmp_path))


def test_device_and_dtype_choices():
    assert core.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert core.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert core.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        core.resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="device must be one of"):
        core.resolve_device("tpu")


# ---------------------------------------------------------------------------------------------------- text, latents
def test_text_encode(conditioning, nodes):
    assert conditioning.prompt_embeds.shape == conditioning.negative_embeds.shape == (1, 512, 32)
    assert conditioning.prompt_mask.shape == (1, 512) and 0 < conditioning.prompt_mask.sum() < 512
    padded = conditioning.prompt_mask[0] == 0
    assert conditioning.prompt_embeds[0, padded].abs().max() == 0
    assert not torch.equal(conditioning.prompt_embeds, conditioning.negative_embeds)
    with pytest.raises(ValueError, match="prompt"):
        core.encode_text(nodes["text_encoder"], "  ")


@pytest.mark.parametrize(("mode", "video", "audio"), [("t2av", True, True), ("t2v", True, False), ("t2a", False, True)])
def test_empty_latents_shapes(mode, video, audio):
    (latents,) = core.empty_latents(mode, 2.0, "240p", "landscape", batch_size=2)
    assert (latents.height, latents.width, latents.num_frames) == (240, 426, 33)
    assert (latents.video is not None, latents.audio is not None) == (video, audio)
    if video:
        assert latents.video.shape == (2, 16, 9, 30, 54) and latents.video.abs().sum() == 0
    if audio:
        assert latents.audio.shape == (2, 8, 56, 16)  # 33 frames -> 224 mel frames / 4


def test_empty_latents_custom_size_and_frames():
    (latents,) = core.empty_latents("t2av", 4.0, **SIZE)
    assert (latents.height, latents.width, latents.num_frames) == (64, 96, 9)
    assert core.empty_latents("t2av", 5.0, "480p", "portrait")[0].num_frames == 81


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"duration": 9.0}, "duration"), ({"mode": "v2a"}, "mode"), ({"resolution": "custom", "width": 100}, "width"),
    ({"num_frames": 10}, "num_frames"), ({"aspect_ratio": "7:5"}, "aspect_ratio"), ({"batch_size": 0}, "batch_size"),
])  # fmt: skip
def test_empty_latents_errors_name_the_field(kwargs, field):
    args = {"mode": "t2av", "duration": 2.0, "resolution": "240p", "aspect_ratio": "landscape"} | kwargs
    with pytest.raises(ValueError, match=field):
        core.empty_latents(**args)


# ---------------------------------------------------------------------------------------------------- sampler
def test_sampler_matches_the_pipeline(nodes, conditioning):
    """denoise 1 is exactly JavisDiTPipeline's loop with the seed's noise (video drawn first, then audio)."""
    (latents,) = core.empty_latents("t2av", 2.0, **SIZE)
    (out,) = core.sample(nodes["model"], conditioning, latents, seed=3, steps=3, video_cfg=4.0, audio_cfg=2.0)
    generator = torch.Generator().manual_seed(3)
    noise_video = torch.randn(latents.video.shape, generator=generator)
    noise_audio = torch.randn(latents.audio.shape, generator=generator)
    pipe = JavisDiTPipeline(transformer=nodes["model"].module, scheduler=core.make_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt_embeds=conditioning.prompt_embeds, prompt_attention_mask=conditioning.prompt_mask,
        negative_prompt_embeds=conditioning.negative_embeds,
        negative_prompt_attention_mask=conditioning.negative_mask, height=64, width=96, num_frames=9,
        num_inference_steps=3, guidance_scale=4.0, audio_guidance_scale=2.0, latents=noise_video,
        audio_latents=noise_audio, output_type="latent",
    )  # fmt: skip
    torch.testing.assert_close(out.video, expected.frames, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.audio, expected.audio, rtol=1e-5, atol=1e-5)
    assert not torch.equal(out.video, noise_video)
    again = core.sample(nodes["model"], conditioning, latents, seed=3, steps=3, video_cfg=4.0, audio_cfg=2.0)[0]
    assert torch.equal(again.video, out.video)
    other = core.sample(nodes["model"], conditioning, latents, seed=4, steps=3, video_cfg=4.0, audio_cfg=2.0)[0]
    assert not torch.equal(other.audio, out.audio)


def test_sampler_reports_progress_every_step(nodes, conditioning):
    (latents,) = core.empty_latents("t2av", 2.0, **SIZE)
    hooks = RecordingHooks()
    forwards = count_forwards(nodes["model"])
    core.sample(nodes["model"], conditioning, latents, steps=4, hooks=hooks)
    assert hooks.progress_calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert hooks.checks == 4 and len(forwards) == 4


def test_sampler_stops_when_interrupted(nodes, conditioning):
    (latents,) = core.empty_latents("t2av", 2.0, **SIZE)
    hooks = RecordingHooks(interrupt_at=3)
    forwards = count_forwards(nodes["model"])
    with pytest.raises(InterruptedError):
        core.sample(nodes["model"], conditioning, latents, steps=10, hooks=hooks)
    assert len(forwards) == 2 and hooks.progress_calls[-1] == (2, 10)


def test_denoise_runs_the_tail_of_a_longer_schedule(nodes, conditioning):
    shift = official_shift(64, 96, 9)
    assert partial_sigmas(4, shift, 0.5) == official_sigmas(8, shift)[4:]
    assert partial_sigmas(4, shift, 1.0) == official_sigmas(4, shift)
    (empty,) = core.empty_latents("t2av", 2.0, **SIZE)
    (first,) = core.sample(nodes["model"], conditioning, empty, seed=1, steps=2)
    hooks = RecordingHooks()
    (refined,) = core.sample(nodes["model"], conditioning, first, seed=1, steps=2, denoise=0.3, hooks=hooks)
    assert hooks.progress_calls[-1] == (2, 2)
    from_empty = core.sample(nodes["model"], conditioning, empty, seed=1, steps=2, denoise=0.3)[0]
    assert not torch.allclose(refined.video, from_empty.video)  # the given latents matter below denoise 1
    # a light refine stays near its input; denoise 1 ignores it
    assert (refined.video - first.video).abs().mean() < (from_empty.video - first.video).abs().mean()
    with pytest.raises(ValueError, match="denoise"):
        core.sample(nodes["model"], conditioning, empty, steps=2, denoise=0.0)


def test_sampler_single_modality(nodes, conditioning):
    (latents,) = core.empty_latents("t2a", 2.0, **SIZE)
    (out,) = core.sample(nodes["model"], conditioning, latents, steps=2)
    assert out.video is None and out.audio.shape == latents.audio.shape


# ---------------------------------------------------------------------------------------------------- decoders
@pytest.fixture(scope="module")
def sampled(nodes, conditioning):
    (latents,) = core.empty_latents("t2av", 2.0, **(SIZE | {"batch_size": 2}))
    return core.sample(nodes["model"], conditioning, latents, seed=0, steps=2)[0]


def test_video_decode_returns_comfy_images(nodes, sampled):
    images, fps = core.decode_video(nodes["video_vae"], sampled)
    assert images.shape == (2 * 9, 64, 96, 3) and images.dtype == torch.float32  # clips one after another
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    assert fps == 16.0
    first_clip = core.decode_video(nodes["video_vae"], core.JavisLatents(sampled.video[:1], None, 64, 96, 9))[0]
    torch.testing.assert_close(images[:9], first_clip, rtol=1e-4, atol=1e-4)


def test_audio_decode_returns_comfy_audio(nodes, sampled):
    (audio,) = core.decode_audio(nodes["audio_vae"], sampled)
    assert set(audio) == {"waveform", "sample_rate"} and audio["sample_rate"] == 16000
    assert audio["waveform"].shape == (2, 1, 9000) and audio["waveform"].dtype == torch.float32  # 9 frames / 16 fps
    assert torch.isfinite(audio["waveform"]).all() and audio["waveform"].abs().max() <= 1


def test_decoders_refuse_a_missing_modality(nodes, conditioning):
    (video_only,) = core.empty_latents("t2v", 2.0, **SIZE)
    (audio_only,) = core.empty_latents("t2a", 2.0, **SIZE)
    with pytest.raises(ValueError, match="no audio"):
        core.decode_audio(nodes["audio_vae"], video_only)
    with pytest.raises(ValueError, match="no video"):
        core.decode_video(nodes["video_vae"], audio_only)


# ---------------------------------------------------------------------------------------------------- comfy hooks
def test_comfy_step_hooks_drive_comfyui_progress_and_interrupt(monkeypatch, nodes, conditioning):
    """The adapter against a shim of comfy.utils.ProgressBar / comfy.model_management (their real signatures)."""
    updates, checks = [], []

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total))

    def throw_exception_if_processing_interrupted():
        checks.append(1)
        if len(checks) == 3:
            raise RuntimeError("InterruptProcessingException")

    comfy = types.ModuleType("comfy")
    comfy.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
    comfy.model_management = types.SimpleNamespace(
        throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted
    )
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", comfy.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", comfy.model_management)
    (latents,) = core.empty_latents("t2av", 2.0, **SIZE)
    with pytest.raises(RuntimeError, match="Interrupt"):
        core.sample(nodes["model"], conditioning, latents, steps=5, hooks=core.comfy_step_hooks())
    assert updates == [(0, 5), (1, 5), (2, 5)] and len(checks) == 3


def test_sampler_refuses_latents_the_model_cannot_make(conditioning):
    from javis_core.tiny import tiny_transformer

    video_model = core.place(tiny_transformer(0, "t2v"), torch.device("cpu"), offload=False)
    (latents,) = core.empty_latents("t2av", 2.0, **SIZE)
    with pytest.raises(ValueError, match="latents: a 't2v' model"):
        core.sample(video_model, conditioning, latents, steps=1)
