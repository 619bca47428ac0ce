"""Does a joint model's audio prediction use the picture? Audio loss with each clip's own video vs another clip's.

    python benchmarks/picture_dependence.py --model outputs/demo/stage2/transformer --cache outputs/demo/cache_av
    python benchmarks/picture_dependence.py --model ... --cache ... --given sound   # the video loss beside the sound
    python benchmarks/picture_dependence.py --model ... --cache ... --clips 96 --by-object   # one table per object

Reads the last ``--clips`` rows of a training latent cache (``training/train.py``'s ``cache_dir``: video latents,
audio posterior, text embeddings), noises video and audio to the same level (as in training), and prints the audio
flow-matching loss at several noise levels twice: beside the clip's own video latents, and beside those of another
clip of the same caption kind (the next row whose caption names the same object). A model whose sound follows its
picture predicts the audio better beside the right picture; equal losses mean the audio ignores the video.
``--given sound`` asks the mirror question: the video loss beside the clip's own sound and beside another clip's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from javis_core.loaders.checkpoints import load_transformer  # noqa: E402
from javis_core.demo.model import TEXT_MAX_LENGTH  # noqa: E402
from javis_core.training.cache import pad_embeds, read_cache  # noqa: E402
from javis_core.training.objective import flow_matching_losses  # noqa: E402


def same_object_partner(texts: list[str], objects: tuple[str, ...]) -> list[int]:
    """For each caption, the next caption (cyclically) naming the same object of ``objects``."""
    found = [next((o for o in objects if o in text), None) for text in texts]
    order = list(range(len(texts)))
    return [next(j for j in order[i + 1 :] + order[: i + 1] if found[j] == found[i]) for i in order]


PREDICTED = {"picture": "audio", "sound": "video"}  # given modality -> the one whose loss is measured


def object_groups(texts: list[str], objects: tuple[str, ...]) -> list[str | None]:
    """Each caption's object: the first entry of ``objects`` it names; an entry "light/lamp/bulb" names one object
    by any of its words and is reported under the first."""

    def group(text: str) -> str | None:
        return next((entry.split("/")[0] for entry in objects if any(w in text for w in entry.split("/"))), None)

    return [group(text) for text in texts]


@torch.no_grad()
def losses_beside(model, cache_dir: Path, clips: int, sigmas: list[float], objects: tuple[str, ...],
                  text_length: int = TEXT_MAX_LENGTH, seed: int = 0, given: str = "picture",
                  given_noise_scale: float = 1.0, by_object: bool = False) -> dict:  # fmt: skip
    """{sigma: (loss of the predicted modality beside the ``given`` one's own latents, beside another clip's)}, or
    with ``by_object`` {object: {sigma: (own, another)}} over the clips that name each object.

    ``given`` "picture": the audio loss beside the video; "sound": the video loss beside the audio. Text embeddings
    are zero-padded to ``text_length`` as in training (cross-attention sees the padding, so another length is another
    input). The given modality is noised to ``given_noise_scale`` x sigma (1: the same level, as in the official
    training); the model is told sigma. The other clip names the same word of ``objects`` (entries split at "/")."""
    if given not in PREDICTED:
        raise ValueError(f"given must be {' or '.join(map(repr, PREDICTED))}, got {given!r}")
    rows = read_cache(cache_dir)[-clips:]
    data = [load_file(str(row.path)) for row in rows]
    captions = [row.text for row in rows]
    words = tuple(word for entry in objects for word in entry.split("/"))
    partner = same_object_partner(captions, words)
    texts = [d["text_embeds"] for d in data]
    embeds, mask = pad_embeds(texts, text_length)
    generator = torch.Generator().manual_seed(seed)
    video = torch.stack([d["video"] for d in data])
    audio = torch.stack([d["audio_mean"] + d["audio_std"] * torch.randn(d["audio_std"].shape, generator=generator)
                         for d in data])  # fmt: skip
    video_noise = torch.randn(video.shape, generator=generator)
    audio_noise = torch.randn(audio.shape, generator=generator)
    # the other clip's latents replace the given modality's; the given modality is noised to its own level
    another = (video[partner], audio) if given == "picture" else (video, audio[partner])
    level = "video_timesteps" if given == "picture" else "audio_timesteps"
    per_clip = {}
    for sigma in sigmas:
        t = torch.full((len(data),), sigma * 1000)
        per_clip[sigma] = [
            flow_matching_losses(model, *latents, embeds, mask, t, video_noise, audio_noise, rows[0].num_frames,
                                 **{level: t * given_noise_scale})[PREDICTED[given]]
            for latents in ((video, audio), another)
        ]  # fmt: skip

    def means(chosen: list[int]) -> dict[float, tuple[float, float]]:
        return {sigma: (float(own[chosen].mean()), float(other[chosen].mean()))
                for sigma, (own, other) in per_clip.items()}  # fmt: skip

    if not by_object:
        return means(list(range(len(rows))))
    found = object_groups(captions, objects)
    return {name: means([i for i, f in enumerate(found) if f == name]) for name in dict.fromkeys(found) if name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a t2av transformer dir")
    parser.add_argument("--cache", type=Path, required=True, help="a training latent cache with video and audio")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--objects", nargs="+", default=["ball", "light/lamp/bulb", "drum"],
                        help="words that name a clip's object (another clip must name the same word); "
                             "an entry a/b/c is one object for --by-object")  # fmt: skip
    parser.add_argument("--by-object", action="store_true", help="one table per object")
    parser.add_argument("--text-length", type=int, default=TEXT_MAX_LENGTH,
                        help="the training's data.text_max_length (the demo's by default)")
    parser.add_argument("--given", choices=tuple(PREDICTED), default="picture",
                        help="picture: the audio loss beside own vs another video; sound: the video loss beside own "
                             "vs another sound")  # fmt: skip
    parser.add_argument("--given-noise-scale", "--picture-noise-scale", type=float, default=1.0, metavar="S",
                        help="noise the given modality to S x the other's level (train.audio_given_video's "
                             "video_noise_scale)")  # fmt: skip
    args = parser.parse_args(argv)
    model = load_transformer(args.model, torch_dtype=torch.float32).eval()
    predicted, given = PREDICTED[args.given], args.given
    results = losses_beside(model, args.cache, args.clips, args.sigmas, tuple(args.objects), args.text_length,
                            given=args.given, given_noise_scale=args.given_noise_scale, by_object=args.by_object)
    for name, table in (results.items() if args.by_object else [(None, results)]):
        if name is not None:
            print(f"\n{name}:")
        print(f"| noise level | {predicted} loss, own {given} | {predicted} loss, another {given} | difference |")
        print("|---|---|---|---|")
        for sigma, (own, other) in table.items():
            print(f"| {sigma:g} | {own:.4f} | {other:.4f} | {100 * (other - own) / other:+.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
