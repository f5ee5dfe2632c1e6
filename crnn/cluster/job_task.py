"""The multi-node train task: run the TFJob on the data the convert steps left on the shared PVC, collect
the model."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crnn.cluster.commands import TrainSpec
from crnn.cluster.targets import DATASETS_MOUNT
from crnn.cluster.targets import target as target_named
from crnn.cluster.tfjob import run_tfjob, tfjob_manifest
from crnn.tracking import Tracking


def train_as_tfjob(train_dirs: Sequence[Path], val_dir: Path | None, model_dir: str, preset: str, steps: int,
                   batch_size: int, tracking: Tracking, target: str, workers: int, image: str, namespace: str,
                   job_id: str, mount: Path = Path(DATASETS_MOUNT), api: Any = None) -> dict:
    """Runs in a task that mounts the datasets PVC at ``mount``; the workers mount it at the same path and read
    the converted data where the convert steps wrote it, so it must be on that volume."""
    chosen = target_named(target)
    outside = [str(d) for d in [*train_dirs, *([val_dir] if val_dir else [])] if not Path(d).is_relative_to(mount)]
    if outside:
        raise ValueError(f"{', '.join(outside)}: not on the datasets volume ({mount}), which the training job's "
                         f"workers mount; set the pipeline's data_root under {mount}")
    work = mount / "jobs" / job_id
    tracking_uri, parent_run_id = tracking.resolved()
    spec = TrainSpec(tuple(map(str, train_dirs)), str(work / "out"), val_dir=str(val_dir or ""), preset=preset,
                     steps=steps, batch_size=batch_size, device=chosen.device, num_devices=chosen.devices_per_node,
                     tracking_uri=tracking_uri or "", parent_run_id=parent_run_id or "")
    name = f"crnn-train-{job_id}"[:63].rstrip("-").lower()
    run_tfjob(api or _custom_objects_api(), tfjob_manifest(name, namespace, image, spec, workers, chosen))
    shutil.copytree(work / "out", model_dir, dirs_exist_ok=True)
    return {"workers": workers, "target": target, "tfjob": name}


def _custom_objects_api() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()  # the task's service account: see manifests/base (RBAC)
    return client.CustomObjectsApi()
