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
import asyncio
import functools
import html
import ipaddress
import logging
import os
import tempfile
import threading
from pathlib import Path

import anyio
import gradio as gr
import torch

from javis_core.demo import world as demo_world
from javis_core.studio.session import (
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
    DEFAULT_KEEP_BYTES,
    DEFAULT_KEEP_SECONDS,
    aspect_choices,
    estimate_gpu_seconds,
)
from javis_core.studio.server import JobGate, without_server_paths
from javis_core.pipelines.requests import MAX_PROMPT_CHARS, UI_LIMITS
from javis_core.demo.model import DEMO_DIR
from javis_core.loaders.hub import add_loading_arguments
from javis_core.pipelines.speed import PRESETS, resolve_attention_backend
from javis_core.pipelines.sizes import DURATIONS, RESOLUTIONS
from javis_core.codecs.text import DEFAULT_NEGATIVE_PROMPT
from javis_core.utils import best_device

try:  # Hugging Face ZeroGPU; a no-op decorator elsewhere, and absent outside Spaces
    import spaces
except ImportError:
    spaces = None

logger = logging.getLogger("javis_studio")
ASSETS = Path(__file__).resolve().parent / "assets"
ON_SPACES = bool(os.environ.get("SPACE_ID"))
DEFAULT_OUTPUT_DIR = Path(tempfile.gettempdir()) / "javis-studio"
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

    def run_job(settings, session, client, model, cancel, report):
        return studio.generate(settings, session, report, client=client, model=model, cancel=cancel)

    if spaces is not None:

        def gpu_seconds(settings, *args, **kwargs):
            return estimate_gpu_seconds(settings.num_inference_steps, settings.resolution, settings.duration)

        run_job = spaces.GPU(duration=gpu_seconds)(run_job)
    threads = anyio.CapacityLimiter(studio.gate.max_waiting + studio.gate.slots + 2)

    async def generate(prompt, negative_prompt, mode, duration, resolution, aspect_ratio, guidance, audio_guidance,
                       link_guidance, steps, shift, seed, randomize_seed, task="text", video_in=None, audio_in=None,
                       image_in=None, strength=0.0, extend_to=None, model=None, history=None,
                       request: gr.Request = None, progress=gr.Progress()):  # noqa: B008  # fmt: skip
        """Generate a sounding video (or audio only / video only) from text, or from your media: ``task`` "v2a"
        (sound for ``video_in``), "a2v" (picture for ``audio_in``), "i2av" (``image_in`` as the first frame) or
        "extend" (continue ``video_in`` to ``extend_to`` seconds); ``strength`` 0 keeps the media exactly.

        Returns the mp4 (None in audio-only mode), the wav (None in video-only mode), the file to download,
        the settings used (JSON) and the seed.
        """
        cancel = threading.Event()
        try:
            settings = GenerationSettings.from_ui(
                prompt, negative_prompt, mode, duration, resolution, aspect_ratio, guidance, audio_guidance,
                link_guidance, steps, shift, seed, randomize_seed, task, video_in, audio_in, image_in, strength,
                extend_to,
            )  # fmt: skip
            report = lambda done, total, what: progress((done, total), desc=what)  # noqa: E731
            job = functools.partial(run_job, settings, _session(request), _client(request), model, cancel, report)
            work = asyncio.ensure_future(anyio.to_thread.run_sync(job, limiter=threads))
            while not work.done():  # a client that left (closed the page, dropped the connection) stops its job
                await asyncio.wait({work}, timeout=0.5)
                if not work.done() and not cancel.is_set() and _client_gone():
                    logger.info("client gone: stopping its generation after the current step")
                    cancel.set()
            result = work.result()
        except asyncio.CancelledError:  # gradio_client's job.cancel(), or the page's Cancel
            cancel.set()
            raise
        except GenerationCancelled:
            gr.Info("Generation cancelled.")
            return (gr.skip(),) * 6
        except StudioError as error:
            raise gr.Error(_as_html(error), print_exception=False) from None
        except Exception as error:  # anything else: a readable line for the user, the traceback for the log
            logger.exception("generation failed")
            message = f"Generation failed ({type(error).__name__}: {error}). Details are in the server log."
            raise gr.Error(_as_html(message), print_exception=False) from None
        paths = [None if p is None else str(p) for p in (result.video, result.audio, result.download)]
        entry = {"video": paths[0], "audio": paths[1], "thumbnail": result.thumbnail and str(result.thumbnail),
                 "settings": result.settings}  # fmt: skip
        return *paths, result.settings, settings.seed, [*(history or []), entry]

    def check_settings(*values) -> None:
        """Reject bad input (the values ``generate`` takes) before the generation starts: the error of an event
        without outputs is a message only, so the result on show is not covered by the error state of every output."""
        try:
            GenerationSettings.from_ui(*values[:19])
        except StudioError as error:
            raise gr.Error(_as_html(error), print_exception=False) from None

    def select_model(choice: str):
        """This visitor's model (nobody else's changes); the size, length and steps controls move to its values."""
        try:
            status_line = studio.models.status_markdown(choice)
        except StudioError as error:
            raise gr.Error(str(error)) from None
        start = studio.models.defaults(choice)
        aspect_update = gr.Dropdown(choices=aspect_choices(start["resolution"], studio.models.spatial_stride(choice)),
                                    value=start["aspect_ratio"])  # fmt: skip
        return choice, status_line, start["duration"], start["steps"], start["resolution"], aspect_update

    def cancel(request: gr.Request = None) -> None:
        """Stop this session's generation after the current denoising step (and drop its waiting ones)."""
        studio.cancel(_session(request))

    def show_history(history):
        """The session's results (kept on the server, never read from the client): thumbnails and all files."""
        thumbnails = [(h["thumbnail"], _caption(h["settings"])) for h in history or [] if h["thumbnail"]]
        files = [path for h in history or [] for path in (h["video"], h["audio"]) if path]
        return thumbnails, files

    def show_from_history(history, event: gr.SelectData):
        with_video = [h for h in history or [] if h["thumbnail"]]
        if not 0 <= event.index < len(with_video):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        entry = with_video[event.index]
        return entry["video"], entry["audio"], entry["video"], entry["settings"]

    def on_link(linked, video_guidance):
        """Linked: the audio slider shows the video value and is locked; unlinked: it is free."""
        return gr.Slider(interactive=False, value=video_guidance) if linked else gr.Slider(interactive=True)

    def on_resolution(resolution, aspect_ratio, model):
        return gr.Dropdown(choices=aspect_choices(resolution, studio.models.spatial_stride(model)), value=aspect_ratio)

    def on_task(task):
        """Show the uploads, strength and length controls the task uses; conditioned tasks generate both."""
        uploads = TASK_UPLOADS[task]
        return (gr.Video(visible="video_in" in uploads), gr.Audio(visible="audio_in" in uploads),
                gr.Image(visible="image_in" in uploads), gr.Slider(visible=task != "text"),
                gr.Number(visible=task in ("text", "i2av", "extend")),
                gr.Radio(value="t2av") if task in ("v2a", "a2v", "extend") else gr.skip())  # fmt: skip

    def forget_session(request: gr.Request):
        studio.forget_session(_session(request))

    start = studio.models.defaults()
    with gr.Blocks(title="JavisDiT++ studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(
            "## JavisDiT++ studio\nText to a short video with its own synchronized soundtrack "
            "([JavisDiT++](https://huggingface.co/JavisVerse/JavisDiT-v1.0-jav) on Wan2.1-T2V-1.3B)."
        )
        status = gr.Markdown(studio.models.status_markdown(), elem_id="model-status")
        model_choice = gr.Radio(studio.models.choices, value=studio.models.choice, label="Model", elem_id="model",
                                visible=len(studio.models.choices) > 1,
                                info="Yours only: other visitors keep their own. The demo model runs on a CPU; it "
                                     "knows balls, lights and drums in red, green, blue and yellow.")  # fmt: skip
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                prompt = gr.Textbox(
                    label="Prompt", lines=3, elem_id="prompt", max_length=MAX_PROMPT_CHARS,
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
                    duration = gr.Slider(*_span("duration"), value=start["duration"], step=1, label="Duration (s)",
                                         elem_id="duration")  # fmt: skip
                    resolution = gr.Radio(list(RESOLUTIONS), value=start["resolution"], label="Resolution",
                                          elem_id="resolution")  # fmt: skip
                aspect = gr.Dropdown(aspect_choices(start["resolution"], studio.models.spatial_stride()),
                                     value=start["aspect_ratio"],
                                     label="Aspect ratio (width×height)", elem_id="aspect")  # fmt: skip
                with gr.Accordion("Advanced", open=False):
                    negative = gr.Textbox(DEFAULT_NEGATIVE_PROMPT, label="Negative prompt", lines=3,
                                          max_length=MAX_PROMPT_CHARS,
                                          info="Also the unconditional text of guidance; left as is, "
                                          "video-only mode uses its video part.")  # fmt: skip
                    with gr.Row():
                        guidance = gr.Slider(*_span("guidance_scale"), value=5.0, step=0.5, label="Guidance (video)")
                        audio_guidance = gr.Slider(*_span("audio_guidance_scale"), value=5.0, step=0.5,
                                                   label="Guidance (audio)",
                                                   interactive=False)  # fmt: skip
                    link = gr.Checkbox(True, label="Same guidance for audio and video")
                    with gr.Row():
                        steps = gr.Slider(*_span("num_inference_steps"), value=start["steps"], step=1, label="Steps",
                                          elem_id="steps")  # fmt: skip
                        shift = gr.Slider(*_span("shift"), value=0, step=0.1, label="Shift",
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
        history = gr.State([])  # this session's results, kept on the server
        model = gr.State(studio.models.choice)  # this session's model

        resolution.change(on_resolution, [resolution, aspect, model], aspect, api_visibility="private", queue=False)
        link.change(on_link, [link, guidance], audio_guidance, api_visibility="private", queue=False)
        guidance.change(lambda linked, g, a: g if linked else a, [link, guidance, audio_guidance], audio_guidance,
                        api_visibility="private", queue=False)  # fmt: skip
        task.change(on_task, task, [video_in, audio_in, image_in, strength, extend_to, mode],
                    api_visibility="private", queue=False)  # fmt: skip
        # the request's controls (in ``generate``'s order), then the session's State (not part of the API)
        inputs = [prompt, negative, mode, duration, resolution, aspect, guidance, audio_guidance, link, steps,
                  shift, seed, randomize, task, video_in, audio_in, image_in, strength, extend_to]  # fmt: skip
        # queued (its error shows as a toast), but never held back: nothing in the queue has a concurrency limit
        checked = run.click(check_settings, inputs, None, api_visibility="private")
        # no Gradio limit on this event: the studio's own line (JobGate) orders the jobs and bounds each client
        job = checked.success(generate, [*inputs, model, history], [video, audio, download, settings, seed, history],
                              api_name="generate", concurrency_limit=None)  # fmt: skip
        job.success(show_history, history, [gallery, all_files], api_visibility="private", queue=False)
        job.then(studio.models.status_markdown, model, status, api_visibility="private", queue=False)
        # outside the queue, so a full queue cannot hold it back; it reaches the job through the studio. On ZeroGPU
        # the job runs in another process, which only Gradio's cancels= reaches.
        stop.click(cancel, None, None, api_name="cancel", queue=False, cancels=[job] if spaces is not None else None)
        gallery.select(show_from_history, history, [video, audio, download, settings], api_visibility="private")
        demo.load(studio.models.status_markdown, model, status, api_visibility="private", queue=False)
        model_choice.change(select_model, model_choice, [model, status, duration, steps, resolution, aspect],
                            api_visibility="private", queue=False)  # fmt: skip
        demo.unload(forget_session)
    demo.handlers = {"check": check_settings, "generate": generate, "cancel": cancel, "history": show_history,
                     "show": show_from_history, "select_model": select_model, "task": on_task}  # fmt: skip
    return demo


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _client(request: gr.Request | None) -> str:
    """Who asks, for the per-client limit: the address. uvicorn takes it from X-Forwarded-For when the proxy is
    trusted (on this machine, or listed in FORWARDED_ALLOW_IPS); on Spaces the Hub's proxy sets that header."""
    if ON_SPACES and request is not None:
        forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
        if forwarded:
            return forwarded
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or _session(request)


def _client_gone() -> bool:
    """Whether the client of the event being handled has left (Gradio marks its queue event dead when the client's
    stream closes; it does not stop the handler, so the handler asks)."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    for events in getattr(queue, "active_jobs", None) or ():
        for event in events or ():
            if event._id == event_id:
                return not event.alive
    return False


def _span(field: str) -> tuple[float, float]:
    """A slider's range: the studio's limits for that setting (the same the checks and messages use)."""
    return UI_LIMITS[field].low, UI_LIMITS[field].high


def _as_html(message: object) -> str:
    """Error toasts render HTML: escape our messages and keep their line breaks; server paths become file names."""
    return html.escape(without_server_paths(str(message))).replace("\n", "<br>")


def _caption(settings: dict) -> str:
    prompt = settings.get("prompt", "")
    return f"{prompt[:60]}{'…' if len(prompt) > 60 else ''} · seed {settings.get('seed')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    add_loading_arguments(parser)
    parser.add_argument("--no-demo", action="store_true",
                        help="never offer the offline demo model (by default it is used when the full weights are absent)")
    parser.add_argument("--preload", action="store_true", help="load the pipeline at start-up (always on Spaces)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="sampler of every generation: exact (official), fast or fastest (approximate)")
    parser.add_argument("--output-dir", default=None,
                        help=f"where results go: a new or empty folder, or one the studio made before (default "
                             f"{DEFAULT_OUTPUT_DIR}); everything in it is served, old results are deleted")  # fmt: skip
    parser.add_argument("--keep-hours", type=float, default=DEFAULT_KEEP_SECONDS / 3600,
                        help="delete results older than this (default %(default)g)")  # fmt: skip
    parser.add_argument("--keep-gb", type=float, default=DEFAULT_KEEP_BYTES / 2**30,
                        help="keep the output folder under this size, oldest results first (default %(default)g)")
    # None lets Gradio read GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set on Spaces) before its defaults
    parser.add_argument("--host", default=None, help="default 127.0.0.1; 0.0.0.0 serves the local network")
    parser.add_argument("--port", type=int, default=None, help="default 7860, or the next free port")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--auth", action="append", default=None, metavar="USER:PASSWORD",
                        help="ask for this login (repeat for several users); advised with --host 0.0.0.0 or --share")
    parser.add_argument("--queue-size", type=int, default=20, help="most generations waiting (default 20)")
    parser.add_argument("--jobs-per-client", type=int, default=2,
                        help="most generations one client (address) may have running or waiting (default 2)")
    parser.add_argument("--max-upload-mb", type=float, default=10, help="largest file a client may upload (default 10)")
    return parser


def create_studio(args: argparse.Namespace) -> Studio:
    from javis_core.utils import parse_dtype

    # wrong flags are start-up errors, not surprises on the first Generate
    if args.dtype:
        parse_dtype(args.dtype)
    if args.attention:
        resolve_attention_backend(args.attention)
    try:
        torch.device(args.device or "cpu")
    except RuntimeError:
        raise ValueError(f"--device must look like cuda, cuda:1, mps or cpu (got {args.device!r})") from None
    for user in args.auth or ():
        if ":" not in user or not all(user.split(":", 1)):
            raise ValueError(f"--auth must be USER:PASSWORD (got {user.split(':')[0]!r}...)")
    if args.jobs_per_client < 1 or args.queue_size < 0 or args.max_upload_mb <= 0:
        raise ValueError("--jobs-per-client must be at least 1, --queue-size at least 0, --max-upload-mb above 0")
    config = ModelConfig(model=args.model, wan=args.wan, audioldm2=args.audioldm2, device=args.device or best_device(),
                         dtype=args.dtype, offload=args.offload, vae_tiling=args.vae_tiling, compile=args.compile,
                         attention=args.attention, group_offload=args.group_offload, fp8=args.fp8,
                         preset=args.preset)  # fmt: skip
    studio = Studio(
        ModelManager(config, demo_dir=None if args.no_demo else DEMO_DIR), Path(args.output_dir or DEFAULT_OUTPUT_DIR),
        gate=JobGate(per_client=args.jobs_per_client, max_waiting=args.queue_size),
        keep_bytes=int(args.keep_gb * 2**30), keep_seconds=args.keep_hours * 3600,
    )  # fmt: skip
    studio.store.prune()  # what earlier runs left beyond the bounds
    if args.preload or ON_SPACES:
        try:
            studio.models.get()
        except StudioError as error:  # keep serving: the page shows the reason, Generate repeats it
            logger.error("%s", error)
    return studio


def served_beyond_this_machine(host: str | None, share: bool) -> bool:
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if share:
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return True


def launch(demo: gr.Blocks, studio: Studio, args: argparse.Namespace, **kwargs):
    auth = [tuple(user.split(":", 1)) for user in args.auth or ()] or None
    if served_beyond_this_machine(args.host, args.share) and auth is None and not ON_SPACES:
        logger.warning("the studio is served beyond this machine without a login: anyone who reaches it can "
                       "generate and download the results. Add --auth USER:PASSWORD to ask for one.")  # fmt: skip
    # Gradio's own queue only hands requests over (the studio's line orders and bounds them); its bound stays as a
    # backstop against floods of requests
    demo.queue(default_concurrency_limit=None, max_size=max(64, 4 * args.queue_size))
    gr.set_static_paths([str(studio.output_root)])  # results are served from where they are written, not copied
    return demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, auth=auth,
        max_file_size=f"{args.max_upload_mb:g}mb", theme=gr.themes.Soft(), css=CSS,
        show_error=True,  # Gradio's own input errors (a wrong type through the API) with their message
        **kwargs,
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
