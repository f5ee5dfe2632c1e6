"""Multi-node training as a TFJob (``kubeflow.org/v1``): the manifest; ``crnn.cluster.jobs`` runs it.

The training operator starts the workers and gives each a ``TF_CONFIG``, from which ``crnn train`` builds a
``MultiWorkerMirroredStrategy``. Workers share the datasets PVC: the data is read from it and the model is
written to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crnn.cluster.commands import TrainSpec, train_command
from crnn.cluster.jobs import (
    CONTAINER_SECURITY,
    NONROOT,
    PART_OF,
    SIDECAR_OPT_OUT,
    TFJOB,
    JobPolicy,
    JobResources,
)
from crnn.cluster.targets import DATASETS_MOUNT, DATASETS_PVC, MLFLOW_CLIENT_SECRET, Target

CONTAINER = "tensorflow"  # the operator finds the training container by this name


def tfjob_manifest(name: str, namespace: str, image: str, spec: TrainSpec, workers: int, target: Target,
                   resources: JobResources = JobResources(), pvc: str = DATASETS_PVC,
                   owner: Mapping[str, Any] | None = None, policy: JobPolicy = JobPolicy()) -> dict[str, Any]:
    """A TFJob of ``workers`` workers, each training on ``target.devices_per_node`` devices; owned by ``owner``
    (``owner_pod``) when given."""
    if workers < 1:
        raise ValueError(f"a training job needs at least one worker, got {workers}")
    limits = {"cpu": resources.cpu, "memory": resources.memory}
    if target.accelerator:
        limits[target.accelerator] = str(target.devices_per_node)
    container = {
        "name": CONTAINER,
        "image": image,
        "command": train_command(spec),
        "env": [{"name": key, "valueFrom": {"secretKeyRef": {"name": MLFLOW_CLIENT_SECRET, "key": key,
                                                              "optional": True}}}
                for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")],
        "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits},
        "volumeMounts": [{"name": "datasets", "mountPath": DATASETS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": CONTAINER_SECURITY,
    }
    pod = {
        "securityContext": NONROOT,
        "containers": [container],
        "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    if target.node_selector:
        pod["nodeSelector"] = dict(target.node_selector)
    if target.tolerations:
        pod["tolerations"] = [{"key": t.key, "operator": t.operator, "effect": t.effect} for t in target.tolerations]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": dict(PART_OF)}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": f"{TFJOB.group}/{TFJOB.version}",
        "kind": TFJOB.kind,
        "metadata": metadata,
        "spec": {
            # A failed worker restarts and resumes from the latest checkpoint on the PVC.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3,
                          "activeDeadlineSeconds": policy.deadline_seconds,
                          "ttlSecondsAfterFinished": policy.ttl_seconds},
            "tfReplicaSpecs": {"Worker": {"replicas": workers, "restartPolicy": "OnFailure",
                                          "template": {"metadata": {"labels": {"app": "crnn-train", **SIDECAR_OPT_OUT},
                                                                    "annotations": dict(SIDECAR_OPT_OUT)},
                                                       "spec": pod}}},
        },
    }
