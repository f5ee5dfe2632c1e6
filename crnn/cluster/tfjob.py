"""Multi-node training as a TFJob (``kubeflow.org/v1``): the manifest; ``crnn.cluster.jobs`` runs it.

The training operator starts the workers and gives each a ``TF_CONFIG``, from which ``crnn train`` builds a
``MultiWorkerMirroredStrategy``. Workers share the datasets PVC: the data is read from it and the model is
written to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crnn.cluster.commands import TrainSpec, train_command
from crnn.cluster.jobs import SIDECAR_OPT_OUT, TFJOB, JobPolicy, JobResources, job_resource, training_pod
from crnn.cluster.targets import DATASETS_PVC, Target

CONTAINER = "tensorflow"  # the operator finds the training container by this name


def tfjob_manifest(name: str, namespace: str, image: str, spec: TrainSpec, workers: int, target: Target,
                   resources: JobResources = JobResources(), pvc: str = DATASETS_PVC,
                   owner: Mapping[str, Any] | None = None, policy: JobPolicy = JobPolicy()) -> dict[str, Any]:
    """A TFJob of ``workers`` workers, each training on ``target.devices_per_node`` devices; owned by ``owner``
    (``owner_pod``) when given."""
    if workers < 1:
        raise ValueError(f"a training job needs at least one worker, got {workers}")
    pod = training_pod(CONTAINER, image, train_command(spec), target, resources, pvc)
    template = {"metadata": {"labels": {"app": "crnn-train", **SIDECAR_OPT_OUT}, "annotations": dict(SIDECAR_OPT_OUT)},
                "spec": pod}
    return job_resource(TFJOB, name, namespace, {
        # A failed worker restarts and resumes from the latest checkpoint on the PVC.
        "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3,
                      "activeDeadlineSeconds": policy.deadline_seconds,
                      "ttlSecondsAfterFinished": policy.ttl_seconds},
        "tfReplicaSpecs": {"Worker": {"replicas": workers, "restartPolicy": "OnFailure", "template": template}},
    }, labels={}, owner=owner)
