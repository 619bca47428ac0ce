"""The ComfyUI node pack without ComfyUI: schemas (specs), the example workflow, and each node's function on the
tiny random pipeline and on the shipped demo model (ComfyUI's CONDITIONING/LATENT/AUDIO formats, progress every
step, interruption)."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from comfy_nodes import core
from comfy_nodes.specs import LATENT, MAX_SEED, NODE_SPECS, SAMPLER, Param
from javis_core.demo.codecs import GriffinLimVocoder, LinearMelVAE, LinearVideoVAE
from javis_core.demo.model import DEMO_DIR
from javis_core.loaders.pipeline_loader import load_pipeline
from javis_core.pipelines.pipeline_javisdit import JavisDiTPipeline
from javis_core.pipelines.schedule import official_shift, official_sigmas, partial_sigmas
from javis_core.codecs.text import DEFAULT_NEGATIVE_PROMPT, TextEncoder
from javis_core.tiny import save_tiny_pipeline, tiny_transformer
from javis_core.models.transformer import JavisDiTTransformer3DModel

from .conftest import FIXTURES, REPO

API_WORKFLOW = FIXTURES / "comfyui" / "javisdit_t2av_api.json"
UI_WORKFLOW = REPO / "example_workflows" / "javisdit_t2av.json"
# the native nodes of the example graph: socket and widget inputs, outputs (ComfyUI v0.3.64)
NATIVE_NODES = {
    "CLIPTextEncode": ({"clip": "CLIP", "text": "STRING"}, ["CONDITIONING"]),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, ["IMAGE"]),
    "CreateVideo": ({"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO"}, ["VIDEO"]),
    "SaveVideo": ({"video": "VIDEO", "filename_prefix": "STRING", "format": "COMBO", "codec": "COMBO"}, []),
}
SPECS = {spec.node_id: spec for spec in NODE_SPECS}
STRIDE_8 = types.SimpleNamespace(spacial_compression_decode=lambda: 8)  # what Empty Latents reads off a VAE


class RecordingHooks:
    """Stands in for ComfyUI's ProgressBar + interruption check; raises on the ``interrupt_at``-th check."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.progress_calls: list[tuple[int, int]] = []
        self.checks = 0
        self.interrupt_at = interrupt_at

    def progress(self, done: int, total: int, preview: torch.Tensor | None = None) -> None:
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
        "model": core.load_model(path)[0],
        "text_encoder": core.load_text_encoder(path)[0],
        "vae": core.load_video_vae(path)[0],
        "audio_vae": core.load_audio_vae(path)[0],
    }


@pytest.fixture(scope="module")
def prompts(nodes):
    encoder = nodes["text_encoder"]
    return core.encode_text(encoder, "a dog barks in a park"), core.encode_text(encoder, "blurry, noisy")


@pytest.fixture
def fake_folder_paths(monkeypatch, tiny_dir, tmp_path):
    """ComfyUI's folder_paths module with tiny_dir's parent registered as the javisdit folder and an empty
    diffusion_models folder (tmp_path)."""
    folders = {"javisdit": tiny_dir.parent, "diffusion_models": tmp_path}
    module = types.SimpleNamespace(
        get_folder_paths=lambda name: [str(folders[name])] if name in folders else [],
        get_filename_list=lambda name: sorted(p.name for p in folders[name].iterdir() if p.is_file()),
        get_full_path=lambda name, file: str(folders[name] / file) if (folders[name] / file).is_file() else None,
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "folder_paths", module)
    return folders


def small(mode: str = "t2av", batch_size: int = 1) -> dict:
    return core.latents_for(mode, 64, 96, 9, batch_size)


def count_forwards(model: core.JavisDiTModel) -> list[int]:
    calls = []
    model.diffusion_model.register_forward_hook(lambda *_: calls.append(1))
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


def test_schema_types_are_comfyuis_own():
    types_of = lambda spec: ({p.id: p.type for p in spec.inputs}, [o.type for o in spec.outputs])
    assert [types_of(SPECS[node_id])[1] for node_id in ("JavisDiTModelLoader", "JavisDiTTextEncoderLoader",
            "JavisDiTVideoVAELoader", "JavisDiTAudioVAELoader")] == [["MODEL"], ["CLIP"], ["VAE"], ["JAVISDIT_AUDIO_VAE"]]  # fmt: skip
    assert types_of(SPECS["JavisDiTAudioDecode"]) == ({"audio_vae": "JAVISDIT_AUDIO_VAE", "latent": LATENT}, ["AUDIO"])
    sampler_inputs, sampler_outputs = types_of(SAMPLER)
    assert sampler_inputs == {
        "model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent": LATENT, "seed": "INT",
        "steps": "INT", "video_cfg": "FLOAT", "audio_cfg": "FLOAT", "shift": "FLOAT", "denoise": "FLOAT",
        "scheduler": "COMBO", "preset": "COMBO",
    }  # fmt: skip
    assert sampler_outputs == [LATENT] and SAMPLER.step_hooks
    seed = next(p for p in SAMPLER.inputs if p.id == "seed")
    assert seed.control_after_generate and seed.max == MAX_SEED == 0xFFFFFFFFFFFFFFFF  # KSampler's
    empty = SPECS["JavisDiTEmptyLatents"]
    assert [p.id for p in empty.inputs] == ["vae", "mode", "duration", "resolution", "aspect_ratio", "batch_size"]
    duration = next(p for p in empty.inputs if p.id == "duration")
    assert (duration.min, duration.max) == (2.0, 5.0)
    aspect = next(p for p in empty.inputs if p.id == "aspect_ratio")
    assert aspect.default == "16:9" and {"16:9", "9:16", "1:1", "4:3"} <= set(aspect.choices())
    # no device/dtype/offload widgets: ComfyUI's model management decides
    assert not {p.id for spec in NODE_SPECS for p in spec.inputs} & {"device", "dtype", "offload"}


def test_model_dropdown_lists_the_demo_then_the_model_folder(fake_folder_paths, tiny_dir):
    (tiny_dir.parent / "notes.txt").write_text("files are not models")
    model = next(p for p in SPECS["JavisDiTModelLoader"].inputs if p.id == "model")
    assert model.choices() == ["demo", "tiny"]
    assert core.resolve_source("tiny", "model") == tiny_dir
    assert core.resolve_source("demo", "model") == DEMO_DIR
    with pytest.raises(ValueError, match="model: no folder 'absent' in ComfyUI/models/javisdit/"):
        core.resolve_source("absent", "model")


def test_single_file_checkpoint_in_diffusion_models(fake_folder_paths, tiny_dir, nodes):
    """``javis_core.convert --out NAME.safetensors`` writes the file the Model Loader lists and loads; other
    safetensors files in diffusion_models/ (a plain Wan2.1 checkpoint) are not offered."""
    from safetensors.torch import save_file

    from javis_core.convert import main as convert

    models = fake_folder_paths["diffusion_models"]
    assert convert(["--official", str(tiny_dir), "--out", str(models / "javisdit_tiny.safetensors")]) == 0
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(models / "wan2.1_t2v_1.3B.safetensors"))
    model = next(p for p in SPECS["JavisDiTModelLoader"].inputs if p.id == "model")
    assert model.choices() == ["demo", "tiny", "javisdit_tiny.safetensors"]
    (loaded,) = core.load_model("javisdit_tiny.safetensors")
    reference = nodes["model"].diffusion_model.state_dict()
    assert loaded.diffusion_model.config.model_type == "t2av"
    assert all(torch.equal(v, reference[k]) for k, v in loaded.diffusion_model.state_dict().items())
    with pytest.raises(ValueError, match="not a JavisDiT\\+\\+ single-file checkpoint"):
        core.load_model(str(models / "wan2.1_t2v_1.3B.safetensors"))


def test_model_dropdown_without_comfyui_offers_the_demo():
    assert core.model_choices() == ["demo"]


# ---------------------------------------------------------------------------------------------------- workflows
def _node_types(class_type: str) -> tuple[dict[str, str], list[str]]:
    if class_type in NATIVE_NODES:
        return NATIVE_NODES[class_type]
    spec = SPECS[class_type]
    return {p.id: p.type for p in spec.inputs}, [o.type for o in spec.outputs]


def test_api_workflow_mixes_native_nodes_with_ours():
    workflow = json.loads(API_WORKFLOW.read_text())
    classes = {node["class_type"] for node in workflow.values()}
    assert classes == set(SPECS) - {"JavisDiTReferenceVideo", "JavisDiTReferenceAudio"} | set(NATIVE_NODES)
    for node_id, node in workflow.items():
        expected, _ = _node_types(node["class_type"])
        spec = SPECS.get(node["class_type"])
        if spec is not None:
            assert set(node["inputs"]) == set(expected), node_id
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link [source node, output index]
                outputs = _node_types(workflow[value[0]]["class_type"])[1]
                assert outputs[value[1]] == expected[name], f"{node_id}.{name}"
            elif spec is not None:
                p: Param = next(p for p in spec.inputs if p.id == name)
                assert p.is_widget, f"{node_id}.{name} must be linked"
                assert value in p.choices() if p.type == "COMBO" else p.min is None or p.min <= value <= p.max


EXAMPLES = ("t2av", "video_to_audio", "image_to_av", "audio_to_video")


def test_example_workflows_are_ui_graphs_with_thumbnails():
    names = sorted(p.name for p in UI_WORKFLOW.parent.iterdir())
    assert names == sorted(f"javisdit_{name}.{ext}" for name in EXAMPLES for ext in ("json", "jpg"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_workflow_is_the_api_graph_in_ui_format(name):
    """Each example in example_workflows/ (what ComfyUI's "Open" and its template browser read) is the API graph in
    tests/fixtures/comfyui that the opt-in real-ComfyUI test runs: same nodes, links and widget values."""
    api = json.loads((API_WORKFLOW.parent / f"javisdit_{name}_api.json").read_text())
    ui = json.loads((UI_WORKFLOW.parent / f"javisdit_{name}.json").read_text())
    assert ui["version"] == 0.4 and "nodes" in ui and "links" in ui
    assert {str(node["id"]): node["type"] for node in ui["nodes"]} == {k: v["class_type"] for k, v in api.items()}
    links = {(str(src), src_slot, str(dst), dst_slot) for _, src, src_slot, dst, dst_slot, _ in ui["links"]}
    by_id = {str(node["id"]): node for node in ui["nodes"]}
    api_links = set()
    for node_id, node in api.items():
        slots = [i["name"] for i in by_id[node_id]["inputs"]]
        for input_name, value in node["inputs"].items():
            if isinstance(value, list):
                api_links.add((value[0], value[1], node_id, slots.index(input_name)))
    assert links == api_links
    for node_id, node in api.items():
        spec = SPECS.get(node["class_type"])
        if spec is None:
            continue
        values = [v for v in by_id[node_id].get("widgets_values", []) if v not in ("fixed", "randomize")]
        widgets = [p.id for p in spec.inputs if p.is_widget]
        assert len(values) == len(widgets), node_id
        for widget, value in zip(widgets, values):
            if not isinstance(node["inputs"][widget], list):  # a widget turned into a link keeps a stale value
                assert value == node["inputs"][widget], f"{node_id}.{widget}"


# ---------------------------------------------------------------------------------------------------- loaders
def test_loaders_build_the_components(nodes):
    model = nodes["model"]
    assert isinstance(model, core.JavisDiTModel) and isinstance(model.diffusion_model, JavisDiTTransformer3DModel)
    assert model.diffusion_model.dtype == torch.float32  # no ComfyUI: fp32
    keys = list(model.state_dict())
    assert keys and all(k.startswith("diffusion_model.") for k in keys)  # what ComfyUI's LoRA loaders match
    assert isinstance(nodes["text_encoder"], TextEncoder)
    assert isinstance(nodes["vae"], AutoencoderKLWan) and core.spatial_stride(nodes["vae"]) == 8
    assert isinstance(nodes["audio_vae"], core.AudioCodec)
    assert not any(p.requires_grad for p in model.parameters())


def test_loader_finds_a_model_in_the_model_folder(fake_folder_paths):
    (codec,) = core.load_audio_vae("tiny")
    assert codec.sample_rate == 16000


def test_loader_errors_say_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="audio_vae: .* has no vae/ \\+ vocoder/"):
        core.load_audio_vae(str(tmp_path))
    with pytest.raises(ValueError, match="text_encoder: .* holds no text encoder"):
        core.load_text_encoder(str(tmp_path))
    with pytest.raises(ValueError, match="vae: .* holds no video VAE"):
        core.load_video_vae(str(tmp_path))


def test_demo_model_loads_through_every_loader():
    (model,) = core.load_model("demo")
    assert model.diffusion_model.config.text_dim == 384
    assert model.latents_std.flatten()[0] == pytest.approx(4.911461203614844)  # the demo codec's statistics
    (encoder,) = core.load_text_encoder("demo")
    ((features, extra),) = core.encode_text(encoder, "a red ball bounces")
    assert features.shape == (1, 32, 384) and extra["attention_mask"].shape == (1, 32)
    (vae,) = core.load_video_vae("demo")
    assert isinstance(vae, LinearVideoVAE) and core.spatial_stride(vae) == 32
    (audio,) = core.load_audio_vae("demo")
    assert isinstance(audio.vae, LinearMelVAE) and isinstance(audio.vocoder, GriffinLimVocoder)


def test_demo_graph_equals_the_demo_pipeline():
    """Loaders -> text encode -> Empty Latents -> sampler on "demo" give load_pipeline("demo")'s latents, and
    decode to a 448x256, 33-frame clip with 2.0625 s of sound."""
    (model,), (encoder,), (vae,), (audio_vae,) = (core.load_model("demo"), core.load_text_encoder("demo"),
                                                  core.load_video_vae("demo"), core.load_audio_vae("demo"))  # fmt: skip
    prompt = "a blue drum is played"
    (empty,) = core.empty_latents(vae, "t2av", 2.0, "240p", "16:9")
    positive, negative = core.encode_text(encoder, prompt), core.encode_text(encoder, DEFAULT_NEGATIVE_PROMPT)
    (out,) = core.sample(model, positive, negative, empty, seed=5, steps=2)
    pipe = load_pipeline("demo")
    expected = pipe(prompt, resolution="240p", aspect_ratio="landscape", duration=2, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(5), output_type="latent")  # fmt: skip
    torch.testing.assert_close(model.normalise(out["samples"]), expected.frames, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[core.AUDIO_SAMPLES], expected.audio, rtol=1e-4, atol=1e-4)
    frames = core.RawVideoDecoder(vae).decode(out["samples"])
    assert frames.shape == (1, 3, 33, 256, 448) and -1 <= frames.min() and frames.max() <= 1
    (audio,) = core.decode_audio(audio_vae, out)
    assert audio["waveform"].shape == (1, 1, 33000) and audio["sample_rate"] == 16000


# ---------------------------------------------------------------------------------------------------- text, latents
def test_text_encode_gives_comfyui_conditioning(prompts, nodes):
    positive, negative = prompts
    ((features, extra),) = positive
    mask = extra["attention_mask"]
    assert features.shape == negative[0][0].shape == (1, 512, 32) and mask.shape == (1, 512)
    assert 0 < mask.sum() < 512 and features[0, mask[0] == 0].abs().max() == 0  # padding zeroed like ComfyUI's umT5
    assert not torch.equal(features, negative[0][0])
    # ComfyUI's umT5 gives no mask: the sampler reads the same one off the zeroed padding
    read_mask = core.conditioning_features([[features, {}]], "positive", 32)[1]
    assert torch.equal(read_mask, mask.long())


def test_sampler_refuses_text_features_of_another_width(nodes, prompts):
    wide = [[torch.ones(1, 8, 384), {}]]
    with pytest.raises(ValueError, match="positive: text features of width 384, the model reads 32"):
        core.sample(nodes["model"], wide, prompts[1], small(), steps=1)


@pytest.mark.parametrize(("mode", "video", "audio"), [("t2av", True, True), ("t2v", True, False), ("t2a", False, True)])
def test_empty_latents_are_comfyui_latents(mode, video, audio):
    (latent,) = core.empty_latents(STRIDE_8, mode, 2.0, "240p", "16:9", batch_size=2)
    assert latent["javisdit"] == {"height": 240, "width": 426, "num_frames": 33}  # 16:9 is landscape
    got_video, got_audio, _ = core.unpack_latent(latent)
    assert (got_video is not None, got_audio is not None) == (video, audio)
    if video:
        assert latent["samples"].shape == (2, 16, 9, 30, 54) and latent["samples"].abs().sum() == 0
    if audio:
        assert got_audio.shape == (2, 8, 56, 16)  # 33 frames -> 224 mel frames / 4
    if not video:
        assert latent["type"] == "audio"


def test_aspect_ratio_is_width_by_height():
    portrait = core.empty_latents(STRIDE_8, "t2v", 5.0, "480p", "9:16")[0]
    assert portrait["javisdit"] == {"height": 854, "width": 480, "num_frames": 81}
    assert core.official_aspect("16:9") == "9:16" and core.official_aspect("landscape") == "9:16"
    assert core.empty_latents(STRIDE_8, "t2v", 2.0, "240p", "4:3")[0]["javisdit"] == {"height": 276, "width": 368, "num_frames": 33}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"duration": 9.0}, "duration"), ({"mode": "v2a"}, "mode"), ({"aspect_ratio": "7:5"}, "aspect_ratio"),
    ({"batch_size": 0}, "batch_size"), ({"resolution": "1080p"}, "resolution"),
])  # fmt: skip
def test_empty_latents_errors_name_the_field(kwargs, field):
    args = {"vae": STRIDE_8, "mode": "t2av", "duration": 2.0, "resolution": "240p", "aspect_ratio": "16:9"} | kwargs
    with pytest.raises(ValueError, match=field):
        core.empty_latents(**args)


def test_foreign_latents_are_refused(nodes, prompts):
    with pytest.raises(ValueError, match="latent: not a JavisDiT\\+\\+ latent"):
        core.sample(nodes["model"], *prompts, {"samples": torch.zeros(1, 16, 9, 8, 12)}, steps=1)


# ---------------------------------------------------------------------------------------------------- sampler
def test_sampler_matches_the_pipeline(nodes, prompts):
    """denoise 1 is exactly JavisDiTPipeline's loop with the seed's noise (video drawn first, then audio); the
    LATENT holds the video in the VAE's raw space."""
    positive, negative = prompts
    latent = small()
    (out,) = core.sample(nodes["model"], positive, negative, latent, seed=3, steps=3, video_cfg=4.0, audio_cfg=2.0)
    generator = torch.Generator().manual_seed(3)
    noise_video = torch.randn(latent["samples"].shape, generator=generator)
    noise_audio = torch.randn(latent[core.AUDIO_SAMPLES].shape, generator=generator)
    pipe = JavisDiTPipeline(transformer=nodes["model"].diffusion_model, scheduler=core.make_scheduler("euler"))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt_embeds=positive[0][0], prompt_attention_mask=positive[0][1]["attention_mask"],
        negative_prompt_embeds=negative[0][0], negative_prompt_attention_mask=negative[0][1]["attention_mask"],
        height=64, width=96, num_frames=9, num_inference_steps=3, guidance_scale=4.0, audio_guidance_scale=2.0,
        latents=noise_video, audio_latents=noise_audio, output_type="latent",
    )  # fmt: skip
    vae = nodes["vae"]
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(out["samples"], expected.frames * std + mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[core.AUDIO_SAMPLES], expected.audio, rtol=1e-5, atol=1e-5)
    again = core.sample(nodes["model"], positive, negative, latent, seed=3, steps=3, video_cfg=4.0, audio_cfg=2.0)[0]
    assert torch.equal(again["samples"], out["samples"])
    other = core.sample(nodes["model"], positive, negative, latent, seed=4, steps=3, video_cfg=4.0, audio_cfg=2.0)[0]
    assert not torch.equal(other[core.AUDIO_SAMPLES], out[core.AUDIO_SAMPLES])


def test_sampler_reports_progress_every_step(nodes, prompts):
    hooks = RecordingHooks()
    forwards = count_forwards(nodes["model"])
    core.sample(nodes["model"], *prompts, small(), steps=4, hooks=hooks)
    assert hooks.progress_calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert hooks.checks == 4 and len(forwards) == 4


def test_sampler_preset_replaces_the_steps_and_scheduler_widgets(nodes, prompts):
    from javis_core.pipelines.speed import PRESETS

    hooks = RecordingHooks()
    forwards = count_forwards(nodes["model"])
    core.sample(nodes["model"], *prompts, small(), steps=4, preset="fast", hooks=hooks)
    assert hooks.progress_calls[-1] == (PRESETS["fast"].num_inference_steps,) * 2
    assert len(forwards) == PRESETS["fast"].num_inference_steps
    with pytest.raises(ValueError, match="preset must be one of custom, exact, fast, fastest"):
        core.sample(nodes["model"], *prompts, small(), steps=4, preset="quick")


def test_sampler_stops_when_interrupted(nodes, prompts):
    hooks = RecordingHooks(interrupt_at=3)
    forwards = count_forwards(nodes["model"])
    with pytest.raises(InterruptedError):
        core.sample(nodes["model"], *prompts, small(), steps=10, hooks=hooks)
    assert len(forwards) == 2 and hooks.progress_calls[-1] == (2, 10)


def test_denoise_runs_the_tail_of_a_longer_schedule(nodes, prompts):
    shift = official_shift(64, 96, 9)
    assert partial_sigmas(4, shift, 0.5) == official_sigmas(8, shift)[4:]
    assert partial_sigmas(4, shift, 1.0) == official_sigmas(4, shift)
    empty = small()
    (first,) = core.sample(nodes["model"], *prompts, empty, seed=1, steps=2)
    hooks = RecordingHooks()
    (refined,) = core.sample(nodes["model"], *prompts, first, seed=1, steps=2, denoise=0.3, hooks=hooks)
    assert hooks.progress_calls[-1] == (2, 2)
    from_empty = core.sample(nodes["model"], *prompts, empty, seed=1, steps=2, denoise=0.3)[0]
    assert not torch.allclose(refined["samples"], from_empty["samples"])  # the given latents matter below denoise 1
    # a light refine stays near its input; denoise 1 ignores it
    assert (refined["samples"] - first["samples"]).abs().mean() < (from_empty["samples"] - first["samples"]).abs().mean()
    with pytest.raises(ValueError, match="denoise"):
        core.sample(nodes["model"], *prompts, empty, steps=2, denoise=0.0)


def test_sampler_single_modality(nodes, prompts):
    (out,) = core.sample(nodes["model"], *prompts, small("t2a"), steps=2)
    video, audio, _ = core.unpack_latent(out)
    assert video is None and audio.shape == small("t2a")["samples"].shape


def test_sampler_refuses_latents_the_model_cannot_make(prompts):
    video_model = core.JavisDiTModel(tiny_transformer(0, "t2v"), [0.0] * 16, [1.0] * 16)
    with pytest.raises(ValueError, match="latent: a 't2v' model"):
        core.sample(video_model, *prompts, small(), steps=1)
    with pytest.raises(ValueError, match="model: connect a JavisDiT\\+\\+ Model Loader"):
        core.sample(video_model.diffusion_model, *prompts, small(), steps=1)


# ---------------------------------------------------------------------------------------------------- decoders
@pytest.fixture(scope="module")
def sampled(nodes, prompts):
    return core.sample(nodes["model"], *prompts, small(batch_size=2), seed=0, steps=2)[0]


def test_video_latent_decodes_with_the_raw_vae_decoder(nodes, sampled):
    """What ComfyUI's VAEDecode calls on our VAE: raw LATENT samples -> frames in [-1, 1], equal to the
    pipeline's decode of the normalised latents."""
    frames = core.RawVideoDecoder(nodes["vae"]).decode(sampled["samples"])
    assert frames.shape == (2, 3, 9, 64, 96) and -1 <= frames.min() and frames.max() <= 1 and frames.std() > 0
    expected = core.VideoCodec(nodes["vae"]).decode(nodes["model"].normalise(sampled["samples"]))
    torch.testing.assert_close(frames, expected, rtol=1e-4, atol=1e-4)


def test_audio_decode_returns_comfy_audio(nodes, sampled):
    (audio,) = core.decode_audio(nodes["audio_vae"], sampled)
    assert set(audio) == {"waveform", "sample_rate"} and audio["sample_rate"] == 16000
    assert audio["waveform"].shape == (2, 1, 9000) and audio["waveform"].dtype == torch.float32  # 9 frames / 16 fps
    assert torch.isfinite(audio["waveform"]).all() and audio["waveform"].abs().max() <= 1


def test_audio_decode_refuses_video_only_latents(nodes):
    with pytest.raises(ValueError, match="no audio"):
        core.decode_audio(nodes["audio_vae"], small("t2v"))


# ---------------------------------------------------------------------------------------------------- comfy hooks
def test_comfy_step_hooks_drive_comfyui_progress_preview_and_interrupt(monkeypatch, nodes, prompts):
    """``comfy_types.StepHooks`` against shims of the ComfyUI modules it calls (their real signatures): the
    progress bar gets every step with a preview image of that step's clean picture, and the interrupt check
    stops the sampler."""
    updates, checks, previewed = [], [], []

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total, preview))

    class Previewer:
        def decode_latent_to_preview_image(self, preview_format, x0):
            previewed.append(tuple(x0.shape))
            return ("JPEG", f"image {len(previewed)}", 512)

    def throw_exception_if_processing_interrupted():
        checks.append(1)
        if len(checks) == 4:
            raise RuntimeError("InterruptProcessingException")

    shims = {
        "comfy": types.ModuleType("comfy"),
        "comfy.utils": types.SimpleNamespace(ProgressBar=ProgressBar),
        "comfy.model_management": types.SimpleNamespace(
            throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted,
            get_torch_device=lambda: torch.device("cpu")),
        "comfy.latent_formats": types.SimpleNamespace(Wan21=lambda: "wan21", LatentFormat=object),
        "comfy.model_patcher": types.SimpleNamespace(ModelPatcher=object),
        "comfy.ops": types.SimpleNamespace(disable_weight_init=types.SimpleNamespace(
            Linear=object, Conv2d=object, Conv3d=object, LayerNorm=object, RMSNorm=object)),
        "comfy.sd": types.SimpleNamespace(VAE=object, CLIP=object),
        "latent_preview": types.SimpleNamespace(get_previewer=lambda device, latent_format: Previewer()),
    }  # fmt: skip
    for name, module in shims.items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("comfy."):
            setattr(shims["comfy"], name.split(".")[1], module)
    monkeypatch.setitem(sys.modules, "comfy_nodes.comfy_types", None)  # imported afresh on the shims, gone after
    del sys.modules["comfy_nodes.comfy_types"]
    monkeypatch.delattr(sys.modules["comfy_nodes"], "comfy_types", raising=False)
    comfy_types = importlib.import_module("comfy_nodes.comfy_types")
    model = nodes["model"]
    model.latent_format = comfy_types.latent_format(model)
    assert model.latent_format == "wan21"  # the tiny pipeline's VAE is Wan2.1's
    with pytest.raises(RuntimeError, match="Interrupt"):
        core.sample(model, *prompts, small(), steps=5, hooks=comfy_types.StepHooks(model))
    assert [(value, total) for value, total, _ in updates] == [(0, 5), (1, 5), (2, 5), (3, 5)] and len(checks) == 4
    assert [preview for _, _, preview in updates] == [None] + [("JPEG", f"image {i}", 512) for i in (1, 2, 3)]
    assert previewed == [tuple(small()["samples"].shape)] * 3
