"""The ``crnn train`` command line a training process runs: in the train task for an Ascend node (one process
per NPU, under ``crnn launch-npu``) and in every worker of a multi-node training job."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crnn.config import PIPELINE_PRESET


@dataclass(frozen=True)
class TrainSpec:
    """What to train and where; 0 or "" keep the preset's setting or turn the feature off."""

    train_dirs: tuple[str, ...]
    out_dir: str
    val_dir: str = ""
    preset: str = PIPELINE_PRESET
    steps: int = 0
    batch_size: int = 0
    device: str = "cpu"
    num_devices: int = 1
    tracking_uri: str = ""
    parent_run_id: str = ""


def train_command(spec: TrainSpec, crnn: Sequence[str] = ("crnn",)) -> list[str]:
    command = [*crnn, "train", "--out", spec.out_dir, "--preset", spec.preset, "--device", spec.device]
    for folder in spec.train_dirs:
        command += ["--train", folder]
    optional = {"--val": spec.val_dir, "--steps": spec.steps, "--batch-size": spec.batch_size,
                "--tracking-uri": spec.tracking_uri, "--parent-run-id": spec.parent_run_id}
    for flag, value in optional.items():
        if value:
            command += [flag, str(value)]
    if spec.device != "npu":  # an NPU process drives one device; launch-npu starts one per device
        command += ["--num-devices", str(spec.num_devices)]
    return command


def npu_command(spec: TrainSpec, log_dir: Path | None = None) -> list[str]:
    """``crnn launch-npu --devices 0-<n-1> -- crnn train --device npu ...``, run with this Python."""
    crnn = [sys.executable, "-m", "crnn.cli"]
    launcher = [*crnn, "launch-npu", "--devices", f"0-{spec.num_devices - 1}"]
    if log_dir is not None:
        launcher += ["--log-dir", str(log_dir)]
    return [*launcher, "--", *train_command(spec, crnn)]
