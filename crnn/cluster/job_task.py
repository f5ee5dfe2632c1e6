"""The multi-node train task: stage the data on the shared PVC, run the TFJob, collect the model."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crnn.cluster.commands import TrainSpec
from crnn.cluster.targets import DATASETS_MOUNT
from crnn.cluster.targets import target as target_named
from crnn.cluster.tfjob import run_tfjob, tfjob_manifest
from crnn.files import atomic_path
from crnn.tracking import Tracking


def train_as_tfjob(train_data: str, data: str, model_dir: str, train_sets: Sequence[str], val_set: str, preset: str,
                   steps: int, batch_size: int, tracking: Tracking, target: str, workers: int, image: str,
                   namespace: str, job_id: str, mount: Path = Path(DATASETS_MOUNT), api: Any = None) -> dict:
    """Runs in a task that mounts the datasets PVC at ``mount``; the workers mount it at the same path."""
    chosen = target_named(target)
    work = mount / "jobs" / job_id
    staged = {key: Path(train_data) / key for key in train_sets} | ({val_set: Path(data) / val_set} if val_set else {})
    for key, source in staged.items():
        _stage(source, work / "data" / key)
    tracking_uri, parent_run_id = tracking.resolved()
    spec = TrainSpec(tuple(str(work / "data" / k) for k in train_sets), str(work / "out"),
                     val_dir=str(work / "data" / val_set) if val_set else "", preset=preset, steps=steps,
                     batch_size=batch_size, device=chosen.device, num_devices=chosen.devices_per_node,
                     tracking_uri=tracking_uri or "", parent_run_id=parent_run_id or "")
    name = f"crnn-train-{job_id}"[:63].rstrip("-").lower()
    run_tfjob(api or _custom_objects_api(), tfjob_manifest(name, namespace, image, spec, workers, chosen))
    shutil.copytree(work / "out", model_dir, dirs_exist_ok=True)
    return {"workers": workers, "target": target, "tfjob": name, "staged": list(staged)}


def _stage(source: Path, dest: Path) -> None:
    """Copies a converted split onto the PVC whole or not at all (a retried task finds it complete)."""
    if dest.is_dir():
        return
    with atomic_path(dest) as tmp:
        shutil.copytree(source, tmp)


def _custom_objects_api() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()  # the task's service account: see manifests/base (RBAC)
    return client.CustomObjectsApi()
