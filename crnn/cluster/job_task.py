"""The train task that runs a training job (a TFJob; an AscendJob for NPUs) on the data the convert steps left
on the shared PVC, in the task's
own namespace and owned by its pod, and collect the model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crnn.cluster.ascendjob import ascendjob_manifest
from crnn.cluster.commands import TrainSpec
from crnn.cluster.jobs import JobPolicy, owner_pod, run_job
from crnn.cluster.targets import DATASETS_MOUNT
from crnn.cluster.targets import target as target_named
from crnn.cluster.tfjob import tfjob_manifest
from crnn.tracking import Tracking

# Where Kubernetes puts the pod's namespace beside its service account token.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The task pod's name and uid: KFP's Argo compiler gives every task container these from the downward API
# (backend/src/v2/compiler/argocompiler/common.go @ 2.2.0 and @ 2.17.0).
POD_NAME_ENV, POD_UID_ENV = "KFP_POD_NAME", "KFP_POD_UID"


def pod_namespace(path: Path | None = None) -> str:
    """The namespace this pod runs in: where its run's jobs belong (a profile namespace of a multi-user
    Kubeflow, ``kubeflow`` on a standalone KFP)."""
    path = path or NAMESPACE_FILE
    try:
        return path.read_text().strip()
    except OSError as error:
        raise RuntimeError(f"{path}: cannot read this pod's namespace ({error.strerror}); the training job is "
                           "created from inside a pipeline task's pod") from None


def train_as_job(train_dirs: Sequence[Path], val_dir: Path | None, work_dir: Path, model_dir: str, preset: str,
                 steps: int, batch_size: int, tracking: Tracking, target: str, workers: int, image: str,
                 job_id: str, policy: JobPolicy | None = None, namespace: str | None = None,
                 mount: Path = Path(DATASETS_MOUNT), api: Any = None) -> dict:
    """Runs in a task that mounts the datasets PVC at ``mount``; the workers mount it at the same path, read the
    converted data where the convert steps wrote it and write checkpoints and the export to ``work_dir``, so all
    of them must be on that volume."""
    from crnn.pipeline_data import publish_model

    chosen, policy = target_named(target), policy or JobPolicy()
    outside = [str(d) for d in [*train_dirs, *([val_dir] if val_dir else []), work_dir]
               if not Path(d).is_relative_to(mount)]
    if outside:
        raise ValueError(f"{', '.join(outside)}: not on the datasets volume ({mount}), which the training job's "
                         f"workers mount; set the pipeline's data_root under {mount}")
    tracking_uri, parent_run_id = tracking.resolved()
    spec = TrainSpec(tuple(map(str, train_dirs)), str(work_dir), val_dir=str(val_dir or ""), preset=preset,
                     steps=steps, batch_size=batch_size, device=chosen.device, num_devices=chosen.devices_per_node,
                     tracking_uri=tracking_uri or "", parent_run_id=parent_run_id or "")
    name = f"crnn-train-{job_id}"[:63].rstrip("-").lower()
    pod, uid = os.environ.get(POD_NAME_ENV), os.environ.get(POD_UID_ENV)
    namespace = namespace or pod_namespace()
    make_manifest = ascendjob_manifest if chosen.device == "npu" else tfjob_manifest
    manifest = make_manifest(name, namespace, image, spec, workers, chosen,
                             owner=owner_pod(pod, uid) if pod and uid else None, policy=policy)
    run_job(api or _custom_objects_api(), manifest, timeout_seconds=policy.deadline_seconds + 600)
    publish_model(Path(work_dir), model_dir)
    return {"workers": workers, "target": target, "job": f"{manifest['kind']}/{name}", "namespace": namespace}


def _custom_objects_api() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()  # the task's service account: see manifests/base (RBAC)
    return client.CustomObjectsApi()
