"""The request rulebook (javis_core.pipelines.requests): modes, limits and the messages every front end shows."""

from __future__ import annotations

import pytest

from javis_core.pipelines.requests import (
    CLI_NAMES,
    LIMITS,
    MODES,
    UI_LIMITS,
    RequestError,
    check_num_frames,
    check_request,
    has_audio,
    has_video,
    mode_for,
    resolve_size,
)


def test_modes_and_their_modalities():
    assert MODES == ("t2av", "t2a", "t2v")
    assert [(has_video(m), has_audio(m)) for m in MODES] == [(True, True), (False, True), (True, False)]
    assert [mode_for(has_video(m), has_audio(m)) for m in MODES] == list(MODES)
    with pytest.raises(ValueError, match="needs video, audio or both"):
        mode_for(False, False)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (dict(num_inference_steps=0), "num_inference_steps", "--steps must be an integer from 1 to 1000 (got 0)"),
        (dict(num_inference_steps=True), "num_inference_steps", "--steps must be an integer"),
        (dict(guidance_scale="5"), "guidance_scale", "--guidance must be a number from 0 to 50 (got '5')"),
        (dict(shift=0), "shift", "--shift must be a number above 0 up to 100 (got 0)"),
        (dict(mode="t2x"), "mode", "--mode must be one of t2av, t2a, t2v (got 't2x')"),
        (dict(prompt=" "), "prompt", "--prompt must be a non-empty string"),
        (dict(negative_prompt=3), "negative_prompt", "--negative-prompt must be a string"),
    ],
)
def test_errors_name_the_field_as_the_caller_does(kwargs, field, message):
    request = dict(prompt="x", mode="t2av", num_inference_steps=50, guidance_scale=5.0) | kwargs
    with pytest.raises(RequestError) as error:
        check_request(**request, names=CLI_NAMES)
    assert error.value.field == field and message in str(error.value)


def test_the_studio_limits_are_narrower_and_returned_as_numbers():
    assert UI_LIMITS["num_inference_steps"].high < LIMITS["num_inference_steps"].high
    numbers = check_request("x", "t2a", 20.0, 5, None, 3, seed=7, limits=UI_LIMITS)
    assert numbers == {"num_inference_steps": 20, "guidance_scale": 5, "shift": 3, "seed": 7}
    assert isinstance(numbers["num_inference_steps"], int)
    with pytest.raises(RequestError, match="num_inference_steps must be an integer from 1 to 100"):
        check_request("x", "t2a", 101, 5, None, None, limits=UI_LIMITS)
    with pytest.raises(RequestError, match="prompt is too long \\(2001 characters; at most 2000\\)"):
        check_request("x" * 2001, "t2a", 10, 5, None, None, max_prompt_chars=2000)


def test_sizes_and_frame_counts():
    assert resolve_size("240p", "landscape") == (240, 426, 65)
    assert resolve_size(height=64, width=96, num_frames=9) == (64, 96, 9)
    assert check_num_frames(1) == 1  # the VAE's own rule: any 4k+1
    for bad, low, high in ((34, 1, None), (1, 5, 161), (165, 5, 161)):
        with pytest.raises(RequestError, match=f"num_frames must be 4k\\+1 .*got num_frames={bad}"):
            check_num_frames(bad, low, high)
    with pytest.raises(RequestError, match="--num-frames must be 4k\\+1 from 5 to 161"):
        resolve_size(num_frames=3, names=CLI_NAMES)
    with pytest.raises(RequestError, match="--duration must be between 2 and 5 seconds"):
        resolve_size(duration=1, names=CLI_NAMES)
    with pytest.raises(RequestError, match="height must be an integer from 16 to 1280"):
        resolve_size(height=8, width=96)
