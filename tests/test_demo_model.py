"""The offline demo model: its codecs, text encoder, stage-0 video base, the shipped weights and the app fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import app
from javis_core.demo import world as demo_world
from javis_core.evaluation import sync_metric
from javis_core.studio.session import DEMO_MODEL, GenerationSettings, ModelConfig, ModelManager, Studio
from javis_core.codecs.audio import AudioCodec
from javis_core.loaders.checkpoints import load_transformer
from javis_core.demo.codecs import GriffinLimVocoder, LinearMelVAE, LinearVideoVAE
from javis_core.demo.model import DEMO_DIR, TEXT_MAX_LENGTH, demo_available, demo_tokenizer, minilm_dir
from javis_core.loaders.pipeline_loader import load_audioldm2_components, load_pipeline
from javis_core.media import probe
from javis_core.codecs.text import TextEncoder
from javis_core.models.transformer import JavisDiTTransformer3DModel
from javis_core.codecs.video import VideoCodec

FPS, FRAMES, HEIGHT, WIDTH = 16, 33, 64, 112


def world_clips(count: int, seed: int = 0, kind: str | None = None, size: tuple[int, int] = (HEIGHT, WIDTH)):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = demo_world.sample_scene(rng, FRAMES / FPS, kind=kind)
        frames, audio = demo_world.render(scene.kind, scene.colour, scene.event_times, FRAMES, *size, FPS)
        yield scene, frames, audio


# (stride, pixel_pool, clip size, latent size the pipeline asks for (even), latent size of the clip); the pooled
# codec gets larger clips, as it is used for: a 32-pixel ball pools to 16 pixels
CODECS = [(16, 1, (HEIGHT, WIDTH), (4, 8), (4, 7)), (32, 2, (128, 224), (4, 8), (4, 7))]


@pytest.fixture(scope="module", params=CODECS, ids=["stride16", "stride32_pooled"])
def video_codec(request, tmp_path_factory) -> tuple[VideoCodec, tuple]:
    stride, pool, size, _, _ = request.param
    clips = (frames for _, frames, _ in world_clips(24, size=size))
    vae = LinearVideoVAE.fit(clips, z_dim=16, scale_factor_spatial=stride, pixel_pool=pool)
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(str(path / "vae"))
    return VideoCodec(LinearVideoVAE.from_pretrained(str(path / "vae"))), request.param


def test_pca_video_codec_keeps_what_the_clip_shows_and_when(video_codec):
    video_codec, (stride, _, size, asked, (latent_h, latent_w)) = video_codec
    assert isinstance(video_codec.vae, LinearVideoVAE) and video_codec.spatial_stride == stride
    assert video_codec.latent_shape(FRAMES, *size) == (16, 9, *asked)
    for scene, frames, _ in world_clips(6, seed=99, size=size):
        x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        latents = video_codec.encode(x)
        assert latents.shape == (1, 16, 9, latent_h, latent_w)
        decoded = video_codec.decode(latents)
        assert decoded.shape == x.shape
        back = ((decoded[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        assert demo_world.classify_kind(back) == scene.kind and demo_world.classify_colour(back) == scene.colour
        events = sync_metric.visual_events(back, FPS)
        assert all(min(abs(v - e) for v in events) <= 1.01 / FPS for e in scene.event_times)  # within a frame
    stds = np.array(video_codec.vae.config.latents_std)
    assert np.all(np.diff(stds) <= 0) and stds[0] > stds[-1] > 0  # principal components, largest first


def test_pooled_video_codec_checks_its_config():
    with pytest.raises(ValueError, match="multiple of pixel_pool"):
        LinearVideoVAE(scale_factor_spatial=32, pixel_pool=3)
    vae = LinearVideoVAE(scale_factor_spatial=32, pixel_pool=2)
    assert vae.components.shape == (16, 4 * 16 * 16 * 3)  # PCA blocks of 16 pooled pixels
    with pytest.raises(ValueError, match="32m"):
        vae.encode(torch.zeros(1, 3, 5, 48, 64))


def test_pca_video_codec_first_frame_is_causal():
    vae = LinearVideoVAE.fit((frames for _, frames, _ in world_clips(4)), z_dim=8)
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    changed = x.clone()
    changed[:, :, 5:] = 0  # later frames must not change the first latent frame
    first = vae.encode(x).latent_dist.mode()[:, :, 0]
    assert torch.equal(first, vae.encode(changed).latent_dist.mode()[:, :, 0])
    with pytest.raises(ValueError, match="4k\\+1"):
        vae.encode(torch.zeros(1, 3, 8, 32, 32))


@pytest.mark.parametrize("whiten, scale", [(True, 1.0), (False, 0.3)])
def test_mel_codec_and_griffin_lim_keep_sound_kind_and_onsets(tmp_path, whiten, scale):
    front = AudioCodec(LinearMelVAE(), GriffinLimVocoder())
    mels = [front.waveform_to_mel(torch.from_numpy(audio)[None]) for _, _, audio in world_clips(24)]
    LinearMelVAE.fit(mels, whiten=whiten, scaling_factor=scale).save_pretrained(str(tmp_path / "vae"))
    GriffinLimVocoder().save_pretrained(str(tmp_path / "vocoder"))
    codec = AudioCodec(LinearMelVAE.from_pretrained(str(tmp_path / "vae")),
                       GriffinLimVocoder.from_pretrained(str(tmp_path / "vocoder")))  # fmt: skip
    assert codec.downsample == 4 and codec.num_mel_bins == 64
    for kind in demo_world.KINDS:
        scene, _, audio = next(world_clips(1, seed=5, kind=kind))
        latents = codec.encode(torch.from_numpy(audio)[None])
        assert latents.shape == (1, 8, 52, 16)
        assert latents.std().item() == pytest.approx(scale, rel=0.5)
        channel_std = latents.std(dim=(0, 2, 3))
        if not whiten:  # one shared scale: the first principal component keeps the largest share
            assert channel_std[0] > 3 * channel_std[-1]
        decoded = codec.decode(latents, len(audio))[0].numpy()
        assert decoded.shape == audio.shape and np.abs(decoded).max() <= 1.0
        assert demo_world.classify_sound(decoded) == demo_world.SOUNDS[kind]
        onsets = sync_metric.audio_onsets(decoded, 16000)
        # most events are heard on time; 40 ms mel patches and Griffin-Lim's phase blur a beep's attack, so one
        # beep onset may be found late
        heard = [min((abs(o - e) for o in onsets), default=1.0) < 0.1 for e in scene.event_times]
        assert np.mean(heard) >= 0.6
        assert len(onsets) <= len(scene.event_times) + 2  # Griffin-Lim's phase may add a ripple or the padded end


def test_minilm_text_encoder_is_padded_to_the_trained_length():
    encoder = TextEncoder.from_pretrained(_minilm_layout())
    embeds, mask = encoder.encode(["a red ball bounces", "a blue drum is hit with a deep thump"])
    assert embeds.shape == (2, TEXT_MAX_LENGTH, 384) and mask.shape == (2, TEXT_MAX_LENGTH)
    assert mask[0].sum() < mask[1].sum() < TEXT_MAX_LENGTH
    assert torch.all(embeds[mask == 0] == 0) and embeds[mask == 1].abs().mean() > 0.01


def _minilm_layout(path=None):
    import tempfile
    from pathlib import Path

    path = Path(path or tempfile.mkdtemp())
    demo_tokenizer().save_pretrained(str(path / "tokenizer"))
    (path / "text_encoder").symlink_to(minilm_dir(), target_is_directory=True)
    return path


def test_a_video_base_becomes_a_joint_model_with_the_audio_branch_copied(tmp_path):
    base = JavisDiTTransformer3DModel(model_type="t2v", num_attention_heads=2, attention_head_dim=24, text_dim=32,
                                      freq_dim=32, ffn_dim=64, num_layers=2)  # fmt: skip
    base.save_pretrained(str(tmp_path))
    joint = load_transformer(tmp_path, model_type="t2av", audio_pe_type="vanilla")
    assert joint.config.model_type == "t2av" and joint.config.audio_pe_type == "vanilla"
    for index in range(2):
        assert torch.equal(joint.blocks[index].audio_ffn.net[2].weight, base.blocks[index].ffn.net[2].weight)
        assert torch.equal(joint.blocks[index].ffn.net[2].weight, base.blocks[index].ffn.net[2].weight)
    assert torch.count_nonzero(joint.audio_proj_out.weight) == 0  # fresh audio head, as the official init
    audio_only = load_transformer(tmp_path, model_type="t2a")
    assert audio_only.config.model_type == "t2a" and not hasattr(audio_only, "patch_embedding")


# ---------------------------------------------------------------------------------------------------- shipped model
MISSING = f"the shipped demo model is missing from {DEMO_DIR}: python training/train_demo.py --export writes it"


@pytest.fixture(scope="module")
def demo_pipe():
    assert demo_available(DEMO_DIR), MISSING
    pipe = load_pipeline("demo")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_demo_model_is_small():
    assert demo_available(DEMO_DIR), MISSING
    files = [p for p in DEMO_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 50 * 2**20
    assert (DEMO_DIR / "README.md").exists()


def test_demo_model_generates_what_held_out_captions_ask_for(demo_pipe):
    captions = demo_world.held_out_captions()[:6]  # two of each kind
    right = []
    for index, item in enumerate(captions):
        out = demo_pipe(item["caption"], num_inference_steps=16, duration=2, resolution="240p", aspect_ratio="9:16",
                        generator=torch.Generator().manual_seed(index))  # fmt: skip
        assert out.frames.shape == (1, 33, 256, 448, 3) and out.audio.shape == (1, 33000)
        frames = (out.frames[0] * 255).round().astype(np.uint8)
        found = demo_world.classify_clip(frames, out.audio[0])
        right += [found["kind"] == item["kind"], found["colour"] == item["colour"],
                  found["sound"] == demo_world.SOUNDS[item["kind"]]]  # fmt: skip
    assert np.mean(right) >= 0.6  # chance is about 0.31


def test_app_falls_back_to_the_demo_model_and_switches(demo_pipe, tmp_path):
    manager = ModelManager(ModelConfig(model=str(tmp_path / "absent"), device="cpu"), demo_dir=DEMO_DIR,
                           demo_loader=lambda path: demo_pipe)  # fmt: skip
    # full weights absent: only the demo is offered (no switch that would start a download)
    assert manager.use_demo and manager.choices == [DEMO_MODEL] and manager.choice == DEMO_MODEL
    assert "demo" in manager.status_markdown() and "were not found" in manager.status_markdown()
    studio = Studio(manager, tmp_path / "out")
    settings = GenerationSettings.from_ui("a green ball bouncing with clicks", None, "t2av", 2, "240p", "landscape",
                                          5.0, 5.0, True, 8, 0, 3, False)  # fmt: skip
    result = studio.generate(settings, "session")
    info = probe(result.video)
    assert info["num_frames"] == 33 and info["audio_codec"] == "aac" and (info["height"], info["width"]) == (256, 448)
    assert result.settings["model"] == "demo" and "--model demo" in result.settings["command"]
    assert manager.spatial_stride() == 32  # so the page's size labels say 448x256

    # both present: each visitor picks one; the choice is theirs (a State), the manager is not switched
    both = ModelManager(ModelConfig(model=str(tmp_path / "tiny"), device="cpu"), demo_dir=DEMO_DIR,
                        demo_loader=lambda path: demo_pipe, full_present=True)  # fmt: skip
    full = both.full_label
    assert full == "tiny (--model)" and both.choices == [full, DEMO_MODEL] and both.choice == full
    select_model = app.build_demo(Studio(both, tmp_path / "out2")).handlers["select_model"]
    choice, status, duration, steps, resolution, aspect = select_model(DEMO_MODEL)
    assert choice == DEMO_MODEL and "offline demo" in status and (duration, steps, resolution) == (2, 16, "240p")
    assert aspect.value == "landscape" and ("Landscape · 448×256", "landscape") in aspect.choices
    assert both.choice == full and not both.loaded  # nobody else's model changed, nothing loaded
    choice, status, duration, steps, resolution, aspect = select_model(full)
    assert "tiny" in status and (duration, steps, resolution) == (4, 50, "240p")
    with pytest.raises(Exception, match="Model must be one of"):
        select_model("JavisDiT++ (full weights)")
    assert both.get(DEMO_MODEL) is demo_pipe and not both.is_demo()


def _demo_eval_module(name: str = "demo_eval"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coupling_measures_how_far_timings_move_between_draws(demo_pipe):
    demo_eval = _demo_eval_module()
    assert demo_eval._moved_ms([0.1, 0.5], [0.12, 0.9]) == pytest.approx(205.0)  # (20 + 380 + 20 + 400) / 4
    assert demo_eval._moved_ms([0.3], []) is None
    captions = demo_world.held_out_captions()[:1]
    moved = demo_eval.coupling(demo_pipe, captions, steps=4, draws=2)  # the noise shapes must fit the demo request
    assert set(moved) == {"onsets_video_noise", "onsets_audio_noise", "events_video_noise", "events_audio_noise"}
    assert all(value is None or value >= 0 for value in moved.values())


def test_sound_for_a_given_picture_is_generated_under_that_picture(demo_pipe):
    demo_eval = _demo_eval_module()
    item = demo_world.held_out_captions()[0]
    scene = demo_world.sample_scene(np.random.default_rng(0), FRAMES / FPS, item["kind"], item["colour"],
                                    item["caption"], exclude_held_out=False)  # fmt: skip
    height, width, _ = demo_pipe.resolve_size("240p", "landscape", None, None, 2, None)
    size = VideoCodec(demo_pipe.vae).decoded_size(height, width)
    picture, _ = demo_world.render(scene.kind, scene.colour, scene.event_times, FRAMES, *size)
    out = demo_eval.generate_for_picture(demo_pipe, item["caption"], picture, steps=4, seed=0)
    frames, audio = demo_eval._clip(out)
    # the video that comes out is the held picture as the codec passes it: same object, colour and event times
    assert frames.shape == picture.shape and audio.shape == (round(FRAMES / FPS * 16000),)
    assert demo_world.classify_kind(frames) == scene.kind and demo_world.classify_colour(frames) == scene.colour
    events = sync_metric.visual_events(frames, FPS)
    assert all(min(abs(v - e) for v in events) <= 1.01 / FPS for e in scene.event_times)
    # a picture held clean (noise scale 0) is another input to the model than one noised with the sound
    clean = demo_eval.generate_for_picture(demo_pipe, item["caption"], picture, steps=4, seed=0, picture_noise_scale=0)
    assert np.array_equal(demo_eval._clip(clean)[0], frames) and not np.allclose(clean.audio[0], out.audio[0])
    result = demo_eval.sound_for_picture(demo_pipe, demo_world.held_out_captions()[:2], steps=2)
    assert set(result) == {"own_picture", "another_picture", "onsets_per_clip", "events_per_clip"}
    assert result["events_per_clip"] > 0 and result["own_picture"]["av_align"] >= 0


def test_picture_for_a_given_sound_is_generated_under_that_sound(demo_pipe):
    demo_eval = _demo_eval_module()
    item = demo_world.held_out_captions()[1]  # a light: its beeps start at the known event times
    scene = demo_world.sample_scene(np.random.default_rng(0), FRAMES / FPS, item["kind"], item["colour"],
                                    item["caption"], exclude_held_out=False)  # fmt: skip
    _, sound = demo_world.render(scene.kind, scene.colour, scene.event_times, FRAMES, 64, 64)
    out = demo_eval.generate_for_sound(demo_pipe, item["caption"], sound, FRAMES, steps=4, seed=0)
    frames, audio = demo_eval._clip(out)
    # the sound that comes out is the held one as the codecs pass it (encode, decode), beeps included
    assert frames.shape[0] == FRAMES and audio.shape == sound.shape
    codec = AudioCodec(demo_pipe.audio_vae, demo_pipe.vocoder)
    passed = codec.decode(codec.encode(torch.from_numpy(sound)[None]), len(sound))[0].numpy()
    assert np.abs(audio - passed).max() < 1e-3  # the same latents; only float rounding differs
    assert len(sync_metric.clip_onsets(audio, 16000, FRAMES, FPS)) == len(scene.event_times)
    clean = demo_eval.generate_for_sound(demo_pipe, item["caption"], sound, FRAMES, steps=4, seed=0,
                                         sound_noise_scale=0)  # fmt: skip
    # a sound held clean (noise scale 0) is another input to the model than one noised with the picture
    assert np.abs(demo_eval._clip(clean)[1] - audio).max() < 1e-3 and not np.allclose(clean.frames[0], out.frames[0])
    result = demo_eval.picture_for_sound(demo_pipe, demo_world.held_out_captions()[:2], steps=2)
    assert set(result) == {"own_sound", "another_sound", "visual_events_per_clip", "events_per_clip"}
    assert result["events_per_clip"] > 0 and result["own_sound"]["av_align"] >= 0


def test_world_through_the_codecs_is_the_reference_row_of_the_table(demo_pipe):
    demo_eval = _demo_eval_module()
    captions = demo_world.held_out_captions()[:6]  # two balls, two lights and two drums
    world = demo_eval.world_through_codecs(demo_pipe, captions)
    summary = world["summary"]
    chance = summary["against_chance"]  # each picture against the other clip of its object
    assert chance["clips"] == 6 and chance["offset_interval_ms"][1] < 0 and chance["av_align_interval"][0] > 0
    assert demo_eval.against_every_other_clip(world["clips"][:3]) is None  # one clip of each object: no partner
    scenes = [demo_eval._world_clip(demo_pipe, item, index)[0] for index, item in enumerate(captions)]
    assert summary["true_events_per_clip"] == pytest.approx(np.mean([len(s.event_times) for s in scenes]))
    # the world's own clips survive the codecs: read back right, and timed far closer than against another clip
    assert summary["acc_all"] == 1.0 and summary["clips_with_events"] == 6
    assert summary["mean_abs_offset_ms"] < 80 < summary["shuffled"]["mean_abs_offset_ms"]
    assert abs(summary["events_per_clip"] - summary["true_events_per_clip"]) <= 1
    for row, scene in zip(world["clips"], scenes):  # every true event is found in the decoded picture
        assert all(min(abs(v - e) for v in row["events_s"]) <= 1.01 / FPS for e in scene.event_times)
    text = demo_eval.table({demo_eval.WORLD: world})
    assert f"| {demo_eval.WORLD} | 100% | 100% | 100% | 100% |" in text
    assert f"have {summary['true_events_per_clip']:.1f} events each" in text
    lines = demo_eval.chance_table({demo_eval.WORLD: world}).splitlines()
    assert len(lines) == 3 and lines[2].startswith(f"| {demo_eval.WORLD} | {chance['own_abs_offset_ms']:.0f} | ")


def test_picture_dependence_pairs_each_clip_with_another_of_the_same_object():
    partner = _demo_eval_module("picture_dependence").same_object_partner
    texts = ["a red ball", "a blue drum", "a green ball", "a lamp", "a yellow drum", "a ball again"]
    assert partner(texts, ("ball", "drum", "lamp")) == [2, 4, 5, 3, 1, 0]  # a lone lamp can only pair with itself


def test_picture_dependence_groups_synonyms_under_one_object():
    groups = _demo_eval_module("picture_dependence").object_groups
    texts = ["a red ball", "a blinking lamp", "a bulb flickers", "a drum", "a light blinks", "a cat"]
    assert groups(texts, ("ball", "light/lamp/bulb", "drum")) == ["ball", "light", "light", "drum", "light", None]


def _tiny_latent_cache(path, texts=("a ball 0", "a ball 1", "a ball 2")) -> None:
    """A training latent cache of three clips whose text embeddings have 5, 7 and 6 tokens."""
    from safetensors.torch import save_file

    from javis_core.training.cache import CACHE_COLUMNS, CACHE_MANIFEST
    from javis_core.utils import write_csv

    (path / "latents").mkdir(exist_ok=True)
    records = []
    for index, (tokens, text) in enumerate(zip((5, 7, 6), texts)):
        name = f"latents/{index:08d}.safetensors"
        latents = {"text_embeds": torch.randn(tokens, 8), "video": torch.randn(4, 3, 2, 2),
                   "audio_mean": torch.randn(2, 4, 2), "audio_std": torch.zeros(2, 4, 2)}  # fmt: skip
        save_file(latents, str(path / name))
        records.append({"latent_path": name, "text": text, "num_frames": 9, "height": 32, "width": 32})
    write_csv(path / CACHE_MANIFEST, CACHE_COLUMNS, records)


class _ZeroModel:
    """Predicts zeros and records what each call saw (text shape, text tokens, video, audio)."""

    def __init__(self):
        self.seen = []

    def __call__(self, hidden_states, encoder_hidden_states, encoder_attention_mask, audio_hidden_states, **_):
        from types import SimpleNamespace

        self.seen.append((encoder_hidden_states.shape, encoder_attention_mask.sum(1).tolist(), hidden_states.clone(),
                          audio_hidden_states.clone()))  # fmt: skip
        zeros = torch.zeros_like
        return SimpleNamespace(sample=zeros(hidden_states), audio_sample=zeros(audio_hidden_states))


def test_picture_dependence_pads_text_to_the_trained_length(tmp_path):
    """Cross-attention sees the zero padding, so the loss must be taken with the text padded as in training."""
    _tiny_latent_cache(tmp_path)
    model = _ZeroModel()
    losses = _demo_eval_module("picture_dependence").losses_beside(model, tmp_path, 3, [0.5], ("ball",), text_length=32)
    (own_shape, own_tokens, own_video, _), (_, _, other_video, _) = model.seen
    assert own_shape == (3, 32, 8) and own_tokens == [5, 7, 6]
    assert not torch.equal(own_video, other_video) and set(losses) == {0.5}
    own_loss, other_loss = losses[0.5]
    assert own_loss > 0 and other_loss > 0


def test_picture_dependence_mirror_swaps_the_sound_noised_to_its_own_level(tmp_path):
    """The mirror question: the same picture twice, the own sound and then another clip's, clearer than the picture."""
    from safetensors.torch import load_file

    _tiny_latent_cache(tmp_path)
    model = _ZeroModel()
    dependence = _demo_eval_module("picture_dependence")
    dependence.losses_beside(model, tmp_path, 3, [0.5], ("ball",), text_length=32, given="sound",
                             given_noise_scale=0.1)  # fmt: skip
    (_, _, first_video, own_sound), (_, _, second_video, other_sound) = model.seen
    assert torch.equal(first_video, second_video) and not torch.equal(own_sound, other_sound)
    clean = torch.stack([load_file(str(path))["audio_mean"] for path in sorted((tmp_path / "latents").iterdir())])
    implied_noise = (own_sound - (1 - 0.05) * clean) / 0.05  # the own sound noised to a tenth of 0.5
    assert 0.5 < implied_noise.std() < 1.5  # unit noise; at the picture's level (0.5) this would be about 9
    with pytest.raises(ValueError, match="given must be 'picture' or 'sound'"):
        dependence.losses_beside(model, tmp_path, 3, [0.5], ("ball",), given="both")


def test_picture_dependence_by_object_averages_each_objects_own_clips(tmp_path):
    """Each object's figures are the mean over its own clips (lamp and light are one object)."""
    _tiny_latent_cache(tmp_path, ("a ball 0", "a lamp 1", "a ball 2"))
    dependence = _demo_eval_module("picture_dependence")
    objects = ("ball", "light/lamp")
    overall = dependence.losses_beside(_ZeroModel(), tmp_path, 3, [0.5], objects, text_length=32)[0.5]
    grouped = dependence.losses_beside(_ZeroModel(), tmp_path, 3, [0.5], objects, text_length=32, by_object=True)
    assert list(grouped) == ["ball", "light"]
    ball, light = grouped["ball"][0.5], grouped["light"][0.5]
    assert ball[0] != pytest.approx(light[0])  # not the same clips
    for which in (0, 1):
        assert (2 * ball[which] + light[which]) / 3 == pytest.approx(overall[which], rel=1e-5)


def test_the_demo_is_an_ordinary_saved_pipeline_loaded_by_diffusers_dispatch(demo_pipe):
    index = json.loads((DEMO_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "JavisDiTPipeline" and index["vae"] == ["javis_core.demo.codecs", "LinearVideoVAE"]
    assert type(demo_pipe.vae).__name__ == "LinearVideoVAE" and type(demo_pipe.vocoder).__name__ == "GriffinLimVocoder"
    assert demo_pipe.transformer.dtype == torch.float32  # stored in fp16, run in fp32 on a CPU
    assert not (DEMO_DIR / "text_encoder" / "model.safetensors").exists()  # the weights come from their package


def test_production_loading_does_not_import_the_demo():
    code = ("import sys, javis_core, javis_core.loaders.pipeline_loader, javis_core.codecs.video, javis_core.generate;"
            "print(sorted(m for m in sys.modules if m.startswith('javis_core.demo')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_encoder_dirs_of_the_demo_recipe_load_through_their_model_index(tmp_path):
    from javis_core.demo.model import write_encoder_dirs
    from javis_core.loaders.pipeline_loader import load_wan_components

    shipped = load_pipeline("demo")
    wan, audio = write_encoder_dirs(tmp_path, shipped.vae, shipped.audio_vae)
    text, video = load_wan_components(wan, torch.float32)
    mel_vae, vocoder = load_audioldm2_components(audio)
    assert isinstance(video.vae, LinearVideoVAE) and isinstance(mel_vae, LinearMelVAE)
    assert isinstance(vocoder, GriffinLimVocoder)
    assert torch.equal(video.vae.state_dict()["components"], shipped.vae.state_dict()["components"])
