"""Weight resolution: local dirs as given, hub ids downloaded, and a useful message when that is impossible."""

from __future__ import annotations

import pytest

from javis_core.loaders.hub import AUDIOLDM2_FILES, WeightsNotFoundError, resolve_weights


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve_weights(tmp_path, AUDIOLDM2_FILES, "AudioLDM2", "--audioldm2") == tmp_path


def test_offline_download_says_what_is_missing_and_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_weights("cvssp/audioldm2", AUDIOLDM2_FILES, "AudioLDM2 audio VAE and vocoder", "--audioldm2")
    message = str(error.value)
    assert "could not download 'cvssp/audioldm2'" in message
    command = "hf download cvssp/audioldm2 --include 'model_index.json' --include 'vae/*' --include 'vocoder/*'"
    assert command + " --local-dir /path/to/dir" in message
    assert "--audioldm2 /path/to/dir" in message


def test_missing_local_path_is_not_taken_for_a_repo(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="local path .* does not exist"):
        resolve_weights(tmp_path / "nowhere" / "x", AUDIOLDM2_FILES, "AudioLDM2", "--audioldm2")
