"""JavisDiT++ studio: text to a short video with its own soundtrack, in the browser and as an API.

    python app.py                                   # weights from the Hub, best device
    python app.py --model DIR --wan DIR --audioldm2 DIR --device cuda --dtype bf16 --offload
    python -m javis_core.tiny --out tiny && python app.py --model tiny   # a random tiny model, for trying the UI

The page starts even without weights or a GPU: the pipeline loads on the first Generate (``--preload`` loads it
at start-up; on Hugging Face Spaces it always does), and a load failure says what is missing and how to get it.
When the full weights are not present, the small offline demo model in ``assets/demo_model`` is used (the page says
so, and a Model switch appears when both exist); ``--model demo`` asks for it, ``--no-demo`` never offers it.
API: ``gradio_client.Client(URL).predict(prompt, ..., api_name="/generate")`` returns the files and settings.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import torch

from javis_core import demo_world
from javis_core.app_support import (
    DEMO_MODEL,
    MAX_SEED,
    MODE_CHOICES,
    TASK_CHOICES,
    TASK_UPLOADS,
    GenerationCancelled,
    GenerationSettings,
    ModelConfig,
    ModelManager,
    Studio,
    StudioError,
    aspect_choices,
    estimate_gpu_seconds,
    video_thumbnail,
)
from javis_core.demo_model import DEMO_DIR
from javis_core.hub import add_loading_arguments
from javis_core.sizes import DURATIONS, RESOLUTIONS
from javis_core.text_encoder import DEFAULT_NEGATIVE_PROMPT
from javis_core.utils import best_device

try:  # Hugging Face ZeroGPU; a no-op decorator elsewhere, and absent outside Spaces
    import spaces
except ImportError:
    spaces = None

logger = logging.getLogger("javis_studio")
ASSETS = Path(__file__).resolve().parent / "assets"
ON_SPACES = bool(os.environ.get("SPACE_ID"))
CSS = """
#model-status p { font-size: 0.9em; margin: 0; }
#result-video video { max-height: 460px; }
"""


def example_prompts(path: Path = ASSETS / "example_prompts.txt") -> list[str]:
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_demo(studio: Studio) -> gr.Blocks:
    """The page. The returned Blocks also carries its handler functions in ``demo.handlers`` (for tests)."""

    def generate(prompt, negative_prompt, mode, duration, resolution, aspect_ratio, guidance, audio_guidance,
                 link_guidance, steps, shift, seed, randomize_seed, task="text", video_in=None, audio_in=None,
                 image_in=None, strength=0.0, extend_to=None, request: gr.Request = None,
                 progress=gr.Progress()):  # noqa: B008  # fmt: skip
        """Generate a sounding video (or audio only / video only) from text, or from your media: ``task`` "v2a"
        (sound for ``video_in``), "a2v" (picture for ``audio_in``), "i2av" (``image_in`` as the first frame) or
        "extend" (continue ``video_in`` to ``extend_to`` seconds); ``strength`` 0 keeps the media exactly.

        Returns the mp4 (None in audio-only mode), the wav (None in video-only mode), the file to download,
        the settings used (JSON) and the seed.
        """
        try:
            settings = GenerationSettings.from_ui(
                prompt, negative_prompt, mode, duration, resolution, aspect_ratio, guidance, audio_guidance,
                link_guidance, steps, shift, seed, randomize_seed, task, video_in, audio_in, image_in, strength,
                extend_to,
            )  # fmt: skip
            session = getattr(request, "session_hash", None) or "default"
            result = studio.generate(settings, session, lambda done, total, what: progress((done, total), desc=what))
        except GenerationCancelled as error:
            raise gr.Error(_as_html(error), title="Cancelled", print_exception=False) from None
        except StudioError as error:
            raise gr.Error(_as_html(error), print_exception=False) from None
        except Exception as error:  # anything else: a readable line for the user, the traceback for the log
            logger.exception("generation failed")
            message = f"Generation failed ({type(error).__name__}: {error}). Details are in the server log."
            raise gr.Error(_as_html(message), print_exception=False) from None
        paths = [None if p is None else str(p) for p in (result.video, result.audio, result.download)]
        return *paths, result.settings, settings.seed

    def check_settings(*values) -> None:
        """Reject bad input (the values ``generate`` takes) before the generation starts: the error of an event
        without outputs is a message only, so the result on show is not covered by the error state of every output."""
        try:
            GenerationSettings.from_ui(*values)
        except StudioError as error:
            raise gr.Error(_as_html(error), print_exception=False) from None

    if spaces is not None:

        def gpu_seconds(prompt, negative_prompt, mode, duration, resolution, aspect_ratio, guidance,
                        audio_guidance, link_guidance, steps, *args, **kwargs):  # fmt: skip
            try:
                return estimate_gpu_seconds(int(steps), resolution, float(duration))
            except (TypeError, ValueError):
                return 120

        generate = spaces.GPU(duration=gpu_seconds)(generate)

    def select_model(choice: str):
        """Switch models; the size, length and steps controls move to the new model's starting values."""
        try:
            status_line = studio.models.select(choice)
        except StudioError as error:
            raise gr.Error(str(error)) from None
        start = studio.models.defaults
        aspect_update = gr.Dropdown(choices=aspect_choices(start["resolution"]), value=start["aspect_ratio"])
        return status_line, start["duration"], start["steps"], start["resolution"], aspect_update

    def cancel(request: gr.Request = None) -> None:
        """Stop this session's generation after the current denoising step."""
        if studio.cancel(getattr(request, "session_hash", None) or "default"):
            gr.Info("Cancelling after the current step…")

    def remember(video, audio, settings, history, request: gr.Request = None):
        """Add a finished result to this session's history (thumbnails of the videos + all files)."""
        thumb = None
        if video:
            folder = studio.session_dir(getattr(request, "session_hash", None) or "default") / "thumbnails"
            thumb = str(video_thumbnail(video, folder / f"{len(history or []):04d}.jpg"))
        entry = {"video": video, "audio": audio, "thumbnail": thumb, "settings": settings}
        history = [*(history or []), entry]
        thumbnails = [(h["thumbnail"], _caption(h["settings"])) for h in history if h["thumbnail"]]
        files = [path for h in history for path in (h["video"], h["audio"]) if path]
        return history, thumbnails, files

    def show_from_history(history, event: gr.SelectData):
        with_video = [h for h in history or [] if h["thumbnail"]]
        if not 0 <= event.index < len(with_video):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        entry = with_video[event.index]
        return entry["video"], entry["audio"], entry["video"], entry["settings"]

    def on_link(linked, video_guidance):
        """Linked: the audio slider shows the video value and is locked; unlinked: it is free."""
        return gr.Slider(interactive=False, value=video_guidance) if linked else gr.Slider(interactive=True)

    def on_resolution(resolution, aspect_ratio):
        return gr.Dropdown(choices=aspect_choices(resolution), value=aspect_ratio)

    def on_task(task):
        """Show the uploads, strength and length controls the task uses; conditioned tasks generate both."""
        uploads = TASK_UPLOADS[task]
        return (gr.Video(visible="video_in" in uploads), gr.Audio(visible="audio_in" in uploads),
                gr.Image(visible="image_in" in uploads), gr.Slider(visible=task != "text"),
                gr.Number(visible=task in ("text", "i2av", "extend")),
                gr.Radio(value="t2av") if task in ("v2a", "a2v", "extend") else gr.skip())  # fmt: skip

    def forget_session(request: gr.Request):
        shutil.rmtree(studio.session_dir(request.session_hash), ignore_errors=True)

    start = studio.models.defaults
    with gr.Blocks(title="JavisDiT++ studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(
            "## JavisDiT++ studio\nText to a short video with its own synchronized soundtrack "
            "([JavisDiT++](https://huggingface.co/JavisVerse/JavisDiT-v1.0-jav) on Wan2.1-T2V-1.3B)."
        )
        status = gr.Markdown(studio.models.status_markdown(), elem_id="model-status")
        model_choice = gr.Radio(studio.models.choices, value=studio.models.choice, label="Model", elem_id="model",
                                visible=len(studio.models.choices) > 1,
                                info="The demo model runs on a CPU with nothing to download; it knows balls, "
                                     "lights and drums in red, green, blue and yellow.")  # fmt: skip
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                prompt = gr.Textbox(
                    label="Prompt", lines=3, elem_id="prompt",
                    placeholder="What should be seen and heard, e.g. a dog barks at a passing train",
                )  # fmt: skip
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
                task = gr.Radio(TASK_CHOICES, value="text", label="Start from", elem_id="task")
                video_in = gr.Video(label="Your video", sources=["upload"], visible=False, elem_id="video-in")
                audio_in = gr.Audio(label="Your sound", type="filepath", sources=["upload"], visible=False,
                                    elem_id="audio-in")  # fmt: skip
                image_in = gr.Image(label="Your picture (first frame)", type="filepath", sources=["upload"],
                                    visible=False, elem_id="image-in")  # fmt: skip
                with gr.Row():
                    strength = gr.Slider(0, 1, value=0, step=0.05, label="Strength", visible=False,
                                         elem_id="strength", info="How much your media may change: 0 = kept "
                                         "exactly, 1 = only a starting point")  # fmt: skip
                    extend_to = gr.Number(0, label="Extend to (s)", minimum=0, maximum=60, elem_id="extend-to",
                                          info="0 = no extension; longer clips chain windows of the "
                                          "duration")  # fmt: skip
                mode = gr.Radio(MODE_CHOICES, value="t2av", label="Mode", elem_id="mode")
                with gr.Row():
                    duration = gr.Slider(*DURATIONS, value=start["duration"], step=1, label="Duration (s)",
                                         elem_id="duration")  # fmt: skip
                    resolution = gr.Radio(list(RESOLUTIONS), value=start["resolution"], label="Resolution",
                                          elem_id="resolution")  # fmt: skip
                aspect = gr.Dropdown(aspect_choices(start["resolution"]), value=start["aspect_ratio"],
                                     label="Aspect ratio (width×height)", elem_id="aspect")  # fmt: skip
                with gr.Accordion("Advanced", open=False):
                    negative = gr.Textbox(DEFAULT_NEGATIVE_PROMPT, label="Negative prompt", lines=3,
                                          info="Also the unconditional text of guidance; left as is, "
                                          "video-only mode uses its video part.")  # fmt: skip
                    with gr.Row():
                        guidance = gr.Slider(0, 15, value=5.0, step=0.5, label="Guidance (video)")
                        audio_guidance = gr.Slider(0, 15, value=5.0, step=0.5, label="Guidance (audio)",
                                                   interactive=False)  # fmt: skip
                    link = gr.Checkbox(True, label="Same guidance for audio and video")
                    with gr.Row():
                        steps = gr.Slider(1, 100, value=start["steps"], step=1, label="Steps", elem_id="steps")
                        shift = gr.Slider(0, 20, value=0, step=0.1, label="Shift",
                                          info="0 = automatic (official formula for the size and length)")  # fmt: skip
                    with gr.Row():
                        seed = gr.Number(42, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                        randomize = gr.Checkbox(True, label="Randomize seed")
                if DEMO_MODEL in studio.models.choices:
                    gr.Examples([[item["caption"]] for item in demo_world.held_out_captions(9)], inputs=[prompt],
                                label="Prompts the demo model knows (balls, lights, drums)",
                                examples_per_page=9, cache_examples=False)  # fmt: skip
                prompts = example_prompts()
                if prompts:
                    gr.Examples([[p] for p in prompts], inputs=[prompt], label="Example prompts",
                                examples_per_page=12, cache_examples=False)  # fmt: skip
            with gr.Column(scale=6):
                video = gr.Video(label="Video with sound", elem_id="result-video", interactive=False,
                                 autoplay=True)  # fmt: skip
                audio = gr.Audio(label="Soundtrack", type="filepath", interactive=False, elem_id="result-audio")
                download = gr.File(label="Download", interactive=False, elem_id="download")
                settings = gr.JSON(label="Settings used (to reproduce a result)", open=True, max_height=260,
                                   elem_id="settings")  # fmt: skip
                with gr.Accordion("This session", open=True):
                    gallery = gr.Gallery(label="Results (click one to show it again)", columns=6, height="auto",
                                         object_fit="contain", allow_preview=False, elem_id="history")  # fmt: skip
                    all_files = gr.File(label="All files", file_count="multiple", interactive=False)
        history = gr.State([])

        resolution.change(on_resolution, [resolution, aspect], aspect, api_visibility="private", queue=False)
        link.change(on_link, [link, guidance], audio_guidance, api_visibility="private", queue=False)
        guidance.change(lambda linked, g, a: g if linked else a, [link, guidance, audio_guidance], audio_guidance,
                        api_visibility="private", queue=False)  # fmt: skip
        task.change(on_task, task, [video_in, audio_in, image_in, strength, extend_to, mode],
                    api_visibility="private", queue=False)  # fmt: skip
        inputs = [prompt, negative, mode, duration, resolution, aspect, guidance, audio_guidance, link, steps,
                  shift, seed, randomize, task, video_in, audio_in, image_in, strength, extend_to]  # fmt: skip
        checked = run.click(check_settings, inputs, None, api_visibility="private")
        job = checked.success(generate, inputs, [video, audio, download, settings, seed], api_name="generate",
                              concurrency_limit=1, concurrency_id="gpu")  # fmt: skip
        job.success(remember, [video, audio, settings, history], [history, gallery, all_files],
                    api_visibility="private")  # fmt: skip
        job.then(studio.models.status_markdown, None, status, api_visibility="private")
        # cancels= also drops a request still waiting in the queue (and stops a ZeroGPU worker, where the
        # in-process interrupt cannot reach); the interrupt stops our own loop after the current step
        stop.click(cancel, None, None, api_name="cancel", concurrency_limit=None, cancels=[job])
        gallery.select(show_from_history, history, [video, audio, download, settings], api_visibility="private")
        demo.load(studio.models.status_markdown, None, status, api_visibility="private")
        model_choice.change(select_model, model_choice, [status, duration, steps, resolution, aspect],
                            api_visibility="private")  # fmt: skip
        demo.unload(forget_session)
    demo.handlers = {"check": check_settings, "generate": generate, "cancel": cancel, "remember": remember,
                     "show": show_from_history, "select_model": select_model, "task": on_task}  # fmt: skip
    return demo


def _as_html(message: object) -> str:
    """Error toasts render HTML: escape our messages and keep their line breaks."""
    return html.escape(str(message)).replace("\n", "<br>")


def _caption(settings: dict) -> str:
    prompt = settings.get("prompt", "")
    return f"{prompt[:60]}{'…' if len(prompt) > 60 else ''} · seed {settings.get('seed')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    add_loading_arguments(parser)
    parser.add_argument("--no-demo", action="store_true",
                        help="never offer the offline demo model (by default it is used when the full weights are absent)")
    parser.add_argument("--preload", action="store_true", help="load the pipeline at start-up (always on Spaces)")
    parser.add_argument("--output-dir", default=None, help="where results go (default: a temp dir)")
    # None lets Gradio read GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set on Spaces) before its defaults
    parser.add_argument("--host", default=None, help="default 127.0.0.1; 0.0.0.0 serves the local network")
    parser.add_argument("--port", type=int, default=None, help="default 7860, or the next free port")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--queue-size", type=int, default=20, help="most requests waiting in the queue")
    return parser


def create_studio(args: argparse.Namespace) -> Studio:
    from javis_core.utils import parse_dtype

    # wrong flags are start-up errors, not surprises on the first Generate
    if args.dtype:
        parse_dtype(args.dtype)
    try:
        torch.device(args.device or "cpu")
    except RuntimeError:
        raise ValueError(f"--device must look like cuda, cuda:1, mps or cpu (got {args.device!r})") from None
    config = ModelConfig(model=args.model, wan=args.wan, audioldm2=args.audioldm2, device=args.device or best_device(),
                         dtype=args.dtype, offload=args.offload, vae_tiling=args.vae_tiling)  # fmt: skip
    output_root = Path(args.output_dir or tempfile.mkdtemp(prefix="javis-studio-"))
    studio = Studio(ModelManager(config, demo_dir=None if args.no_demo else DEMO_DIR), output_root)
    if args.preload or ON_SPACES:
        try:
            studio.models.get()
        except StudioError as error:  # keep serving: the page shows the reason, Generate repeats it
            logger.error("%s", error)
    return studio


def launch(demo: gr.Blocks, studio: Studio, args: argparse.Namespace, **kwargs):
    demo.queue(default_concurrency_limit=1, max_size=args.queue_size)
    return demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, allowed_paths=[str(studio.output_root)],
        theme=gr.themes.Soft(), css=CSS, **kwargs,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        studio = create_studio(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    launch(build_demo(studio), studio, args)


if __name__ == "__main__":
    main()
