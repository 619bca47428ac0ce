"""The ComfyUI Reference nodes (video / image / audio into a LATENT with per-frame masks) and the sampler that holds
them, without ComfyUI, on the shipped demo model: the node graph gives the pipeline's video-to-audio and
audio-to-video latents, a single image holds the first latent frame, and bad inputs are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_nodes import core, reference
from comfy_nodes.latents import AUDIO_MASK, VIDEO_MASK
from javis_core.codecs.text import DEFAULT_NEGATIVE_PROMPT
from javis_core.demo import world as demo_world
from javis_core.loaders.pipeline_loader import load_pipeline
from javis_core.media_inputs import MediaInput

PROMPT = "a red drum is hit"
SEED, STEPS = 7, 2
CLIP = {"height": 240, "width": 426, "num_frames": 33}  # what Empty Latents makes of 240p, 16:9, 2 s


@pytest.fixture(scope="module")
def demo():
    """The demo model through every loader node, its pipeline, and a 2 s drum clip of its world rendered at
    320x240 and 24 fps (another size and rate than the clip's, so the nodes resize and resample)."""
    loaded = {name: load()[0] for name, load in (("model", lambda: core.load_model("demo")),
                                                 ("encoder", lambda: core.load_text_encoder("demo")),
                                                 ("vae", lambda: core.load_video_vae("demo")),
                                                 ("audio_vae", lambda: core.load_audio_vae("demo")))}  # fmt: skip
    scene = demo_world.sample_scene(np.random.default_rng(0), 2.0, "drum", "red")
    picture, sound = demo_world.render(scene.kind, scene.colour, scene.event_times, 48, 240, 320, fps=24)
    pipe = load_pipeline("demo")
    pipe.set_progress_bar_config(disable=True)
    prompts = core.encode_text(loaded["encoder"], PROMPT), core.encode_text(loaded["encoder"], DEFAULT_NEGATIVE_PROMPT)
    return loaded, pipe, prompts, picture, sound


def empty(demo, mode: str = "t2av") -> dict:
    (latent,) = core.empty_latents(demo[0]["vae"], mode, 2.0, "240p", "16:9")
    assert latent[core.LATENT_INFO] == CLIP
    return latent


def as_image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255


def test_reference_video_graph_equals_the_pipelines_video_to_audio(demo):
    """Reference Video (2 s at 24 fps: 32 frames at 16 fps, 29 = 8 whole latent frames) -> sampler gives
    pipe(video=...)'s latents; the held picture is the encoded frames exactly, the sound is generated."""
    nodes, pipe, prompts, picture, _ = demo
    (latent,) = reference.reference_video(empty(demo), nodes["vae"], as_image(picture), denoise=0.0, fps=24)
    assert latent[VIDEO_MASK].flatten().tolist() == [0.0] * 8 + [1.0]
    (out,) = core.sample(nodes["model"], *prompts, latent, seed=SEED, steps=STEPS)
    expected = pipe(PROMPT, video=MediaInput(picture, rate=24), **CLIP, num_inference_steps=STEPS,
                    output_type="latent", generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    torch.testing.assert_close(nodes["model"].normalise(out["samples"]), expected.frames, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[core.AUDIO_SAMPLES], expected.audio, rtol=1e-4, atol=1e-4)
    # denoise 0: the picture never moves (up to the normalise / denormalise round trip)
    torch.testing.assert_close(out["samples"][:, :, :8], latent["samples"][:, :, :8], rtol=1e-6, atol=1e-6)
    assert out[core.AUDIO_SAMPLES].std() > 0.1


def test_reference_audio_graph_equals_the_pipelines_audio_to_video(demo):
    nodes, pipe, prompts, _, sound = demo
    stereo_48k = torch.from_numpy(np.repeat(sound, 3)).view(1, 1, -1).expand(1, 2, -1)  # 16 kHz held 3x = 48 kHz
    (latent,) = reference.reference_audio(empty(demo), nodes["audio_vae"], {"waveform": stereo_48k,
                                                                            "sample_rate": 48000})  # fmt: skip
    assert latent[AUDIO_MASK].shape == (1, 1, 56, 1) and latent[AUDIO_MASK][0, 0, :50].sum() == 0  # 2 s / 40 ms
    assert (latent[AUDIO_MASK][0, 0, 50:] == 1).all()  # the mel padding past the sound is generated
    (out,) = core.sample(nodes["model"], *prompts, latent, seed=SEED, steps=STEPS)
    resampled = reference.read_audio_input(MediaInput(stereo_48k[0].mean(0), rate=48000)).audio
    expected = pipe(PROMPT, audio=MediaInput(resampled), **CLIP, num_inference_steps=STEPS, output_type="latent",
                    generator=torch.Generator().manual_seed(SEED))  # fmt: skip
    torch.testing.assert_close(nodes["model"].normalise(out["samples"]), expected.frames, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[core.AUDIO_SAMPLES], expected.audio, rtol=1e-4, atol=1e-4)
    assert torch.equal(out[core.AUDIO_SAMPLES][:, :, :50], latent[core.AUDIO_SAMPLES][:, :, :50])


def test_one_image_holds_the_first_latent_frame(demo):
    """Image to audio+video: latent frame 0 is the encoded picture at the denoise given, the rest is generated."""
    nodes, _, prompts, picture, _ = demo
    (latent,) = reference.reference_video(empty(demo), nodes["vae"], as_image(picture[:1]), denoise=0.0)
    assert latent[VIDEO_MASK].flatten().tolist() == [0.0] + [1.0] * 8
    (out,) = core.sample(nodes["model"], *prompts, latent, seed=SEED, steps=STEPS)
    torch.testing.assert_close(out["samples"][:, :, 0], latent["samples"][:, :, 0], rtol=1e-6, atol=1e-6)
    assert not torch.equal(out["samples"][:, :, 1], latent["samples"][:, :, 1])
    (half,) = reference.reference_video(empty(demo), nodes["vae"], as_image(picture[:1]), denoise=0.5)
    assert half[VIDEO_MASK].flatten()[0] == 0.5
    (moved,) = core.sample(nodes["model"], *prompts, half, seed=SEED, steps=4)
    assert (moved["samples"][:, :, 0] - half["samples"][:, :, 0]).abs().max() > 1e-2  # held only while t > 500


def test_sound_only_latents_take_a_reference_sound(demo):
    nodes, _, prompts, _, sound = demo
    audio = {"waveform": torch.from_numpy(sound[:16000]).view(1, 1, -1), "sample_rate": 16000}
    (latent,) = reference.reference_audio(empty(demo, "t2a"), nodes["audio_vae"], audio)
    assert latent["type"] == "audio"
    assert latent[VIDEO_MASK][0, 0, :25].sum() == 0 and latent[VIDEO_MASK][0, 0, 25:].min() == 1
    (out,) = core.sample(nodes["model"], *prompts, latent, seed=SEED, steps=STEPS)
    assert torch.equal(out["samples"][:, :, :25], latent["samples"][:, :, :25])


def test_sampler_hands_each_steps_clean_picture_to_the_preview(demo):
    nodes, _, prompts, _, _ = demo
    previews = []

    class Hooks:
        def progress(self, done, total, preview=None):
            previews.append(preview)

        def check_interrupt(self):
            pass

    (out,) = core.sample(nodes["model"], *prompts, empty(demo), seed=SEED, steps=3, hooks=Hooks())
    assert previews[0] is None and [p.shape for p in previews[1:]] == [out["samples"].shape] * 3
    # the last Euler step goes to sigma 0, so its clean estimate is the result itself
    torch.testing.assert_close(previews[-1], nodes["model"].normalise(out["samples"]), rtol=1e-5, atol=1e-5)
    assert (previews[1] - previews[-1]).abs().max() > 1e-3


def test_demo_preview_factors_map_latents_to_their_colours(demo):
    """The fitted Latent2RGB table of the demo codec explains the mean colour each latent pixel decodes to."""
    nodes = demo[0]
    factors, bias = (torch.tensor(t) for t in nodes["model"].preview_factors)
    vae = nodes["vae"]
    latents = torch.randn(4, 16, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    raw = latents * torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    colours = torch.nn.functional.avg_pool2d(vae.decode(raw).sample[:, :, 0], 32).permute(0, 2, 3, 1)
    predicted = latents[:, :, 0].permute(0, 2, 3, 1) @ factors + bias
    assert ((predicted - colours) ** 2).mean() < 0.1 * colours.var()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda n, e: reference.reference_video(e("t2a"), n["vae"], torch.zeros(5, 64, 64, 3)), "latent: .*no video"),
        (lambda n, e: reference.reference_audio(e("t2v"), n["audio_vae"], {"waveform": torch.zeros(1, 1, 16000),
                                                                          "sample_rate": 16000}), "latent: .*no audio"),
        (lambda n, e: reference.reference_video(e("t2av"), n["vae"], torch.zeros(5, 64, 64, 3), denoise=1.5),
         "denoise must be from 0"),
        (lambda n, e: reference.reference_video(e("t2av"), n["vae"], torch.zeros(64, 64, 3)), "images: expected"),
        (lambda n, e: reference.reference_video(e("t2av"), n["vae"], torch.zeros(5, 64, 64, 3), fps=0.5), "images"),
        (lambda n, e: reference.reference_audio(e("t2av"), n["audio_vae"], {"waveform": torch.zeros(1, 1, 800),
                                                                           "sample_rate": 16000}), "audio: .*short"),
    ],
)  # fmt: skip
def test_reference_errors_name_the_input(demo, call, message):
    with pytest.raises(ValueError, match=message):
        call(demo[0], lambda mode: empty(demo, mode))


def test_a_pixel_noise_mask_is_refused_by_name(demo):
    nodes, _, prompts, _, _ = demo
    latent = {**empty(demo), VIDEO_MASK: torch.ones(1, 256, 448)}  # what Set Latent Noise Mask would attach
    with pytest.raises(ValueError, match="noise_mask must hold one value per latent frame"):
        core.sample(nodes["model"], *prompts, latent, steps=1)


def test_extension_step_on_the_tiny_pipeline(tmp_path):
    """Extension through the nodes on the tiny pipeline (Wan2.1-layout VAE, AudioLDM2-layout codec): the last 9
    frames and 0.5625 s of a clip held at the start of the next; both stay, the rest is generated."""
    from javis_core.tiny import save_tiny_pipeline

    tiny = str(save_tiny_pipeline(tmp_path / "tiny"))
    (model,), (encoder,), (vae,), (audio_vae,) = (core.load_model(tiny), core.load_text_encoder(tiny),
                                                  core.load_video_vae(tiny), core.load_audio_vae(tiny))  # fmt: skip
    prompts = core.encode_text(encoder, "waves roll in"), core.encode_text(encoder, "blurry")
    rng = np.random.default_rng(0)
    tail_frames = torch.from_numpy(rng.random((9, 64, 96, 3), dtype=np.float32))
    tail_sound = {"waveform": torch.from_numpy(rng.standard_normal(9000).astype(np.float32) * 0.1).view(1, 1, -1),
                  "sample_rate": 16000}  # fmt: skip
    latent = core.latents_for("t2av", 64, 96, 17)
    (latent,) = reference.reference_video(latent, vae, tail_frames)
    (latent,) = reference.reference_audio(latent, audio_vae, tail_sound)
    assert latent[VIDEO_MASK].flatten().tolist() == [0.0] * 3 + [1.0] * 2  # 9 frames = 3 latent frames
    held_audio = int((latent[AUDIO_MASK] == 0).sum())
    assert held_audio == 14  # 0.5625 s / 40 ms
    (out,) = core.sample(model, *prompts, latent, seed=1, steps=2)
    torch.testing.assert_close(out["samples"][:, :, :3], latent["samples"][:, :, :3], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[core.AUDIO_SAMPLES][:, :, :14], latent[core.AUDIO_SAMPLES][:, :, :14])
    assert (out["samples"][:, :, 3:] - latent["samples"][:, :, 3:]).abs().max() > 1e-3
