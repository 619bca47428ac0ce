"""The runner is a module of the installed package: ``accelerate launch -m javis_core.training.runner`` and
``javis-train`` work from an installed copy, away from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import REPO


def test_runner_runs_from_an_installed_copy(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"  # a copy: setuptools writes build/ beside the sources
    shutil.copytree(REPO / "javis_core", source / "javis_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=600)  # fmt: skip
    assert (target / "bin" / "javis-train").is_file()
    config = tmp_path / "stage1.yaml"
    config.write_text((REPO / "training" / "configs" / "tiny_stage1.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = "import javis_core.training.runner as r; print(r.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(target))  # the installed copy, not the checkout
    result = subprocess.run([sys.executable, "-m", "javis_core.training.runner", "--config", str(config),
                             "train.max_stepz=3"], cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "did you mean train.max_steps?" in result.stderr


def test_nothing_loads_the_runner_script_by_path():
    for path in [*REPO.glob("*.py"), *REPO.glob("**/*.py")]:
        if ".git" in path.parts or path.name == "test_training_install.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "spec_from_file_location" not in text or "train.py" not in text, path
        assert "import train as" not in text and "import train\n" not in text, path
