"""Kept for old commands: the runner is ``javis_core.training.runner`` (``javis-train`` once installed).

    accelerate launch training/train.py --config training/configs/stage1.yaml
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout that is not pip-installed
    from javis_core.training.runner import cli

    sys.exit(cli())
