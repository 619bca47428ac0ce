"""The training runner under accelerate's FSDP on CPU processes (gloo), for tests/test_training_fsdp.py.

    ACCELERATE_USE_CPU=true accelerate launch --config_file training/accelerate/fsdp.yaml --num_processes 2 \
        tests/fsdp_on_cpu.py --config ... key=value ...

accelerate turns the FSDP plugin on only for accelerator devices (CPU processes stay MULTI_CPU); torch's fully_shard
itself runs on CPU with gloo. This lets the plugin through on CPU, so the runner's real FSDP path (accelerate's
fully_shard preparation, sharded checkpoints, the gathering of whole weights) runs on a machine without a GPU.
"""
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None,
                           fsdp_plugin=None, *args, **kwargs):
    _init(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

from javis_core.training.runner import cli  # noqa: E402

sys.exit(cli())
