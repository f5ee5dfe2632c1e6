"""Multi-node training as a TFJob (``kubeflow.org/v1``): the manifest, and running it to the end.

The training operator starts the workers and gives each a ``TF_CONFIG``, from which ``crnn train`` builds a
``MultiWorkerMirroredStrategy``. Workers share the datasets PVC: the data is read from it and the model is
written to it. A pipeline task creates the job in its own namespace, owned by its pod, reports each change of
its conditions, and fails when the job fails; if the task itself is stopped, it deletes the job; a retried task
takes over the job of its earlier attempt.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crnn.cluster.commands import TrainSpec, train_command
from crnn.cluster.targets import DATASETS_MOUNT, DATASETS_PVC, MLFLOW_CLIENT_SECRET, Target

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER = "tensorflow"  # the operator finds the training container by this name
_NONROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}


# Istio would inject a sidecar into the workers in a profile namespace of a multi-user Kubeflow; a sidecar never
# exits, so the pods would never complete and the job never end (kubeflow/training-operator#1778). Both forms:
# the label is what Istio reads first from 1.18, the annotation what older ones read.
SIDECAR_OPT_OUT = {"sidecar.istio.io/inject": "false"}


@dataclass(frozen=True)
class JobResources:
    cpu: str = "8"
    memory: str = "64Gi"


@dataclass(frozen=True)
class JobPolicy:
    """How long the job may run (then the operator fails it and stops its pods) and how long it stays once
    finished (then the operator deletes it and its pods)."""

    deadline_seconds: int = 7 * 24 * 3600
    ttl_seconds: int = 24 * 3600


def owner_pod(name: str, uid: str) -> dict[str, Any]:
    """An ownerReference to the task's pod: Kubernetes' garbage collector deletes the job with the pod, so a task
    pod evicted or deleted leaks no job and no accelerators. Not blocking the pod's deletion, which would need
    the right to update pods' finalizers."""
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": False,
            "blockOwnerDeletion": False}


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
        "securityContext": _CONTAINER_SECURITY,
    }
    pod = {
        "securityContext": _NONROOT,
        "containers": [container],
        "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    if target.node_selector:
        pod["nodeSelector"] = dict(target.node_selector)
    if target.tolerations:
        pod["tolerations"] = [{"key": t.key, "operator": t.operator, "effect": t.effect} for t in target.tolerations]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/part-of": "crnn-pipeline"}}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
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


class JobFailed(RuntimeError):
    pass


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """The latest true condition's (type, message): Created, Running, Restarting, Succeeded or Failed."""
    conditions = [c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"]
    if not conditions:
        return "Pending", ""
    latest = conditions[-1]
    return latest["type"], latest.get("message", "")


def run_tfjob(api: Any, manifest: Mapping[str, Any], timeout_seconds: float = 7 * 24 * 3600,
              poll_seconds: float = 10.0, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Creates the job with ``api`` (a ``kubernetes.client.CustomObjectsApi``), reports each state change, and
    returns the finished job; raises ``JobFailed`` when it fails, ``TimeoutError`` past the timeout. The job is
    deleted if this is interrupted or times out (its pods would otherwise hold the accelerators)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    if threading.current_thread() is threading.main_thread():  # a stopped pipeline task gets SIGTERM
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _create_or_adopt(api, manifest, report)
    deadline = time.monotonic() + timeout_seconds
    seen = None
    try:
        while True:
            job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            state = job_state(job)
            if state != seen:
                report(f"{KIND} {name}: {state[0]}" + (f" ({state[1]})" if state[1] else ""))
                seen = state
            if state[0] == "Succeeded":
                return job
            if state[0] == "Failed":
                raise JobFailed(f"{KIND} {namespace}/{name} failed: {state[1] or 'no message'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{KIND} {namespace}/{name} still {state[0]} after {timeout_seconds:.0f} s")
            time.sleep(poll_seconds)
    except (KeyboardInterrupt, SystemExit, TimeoutError):
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        report(f"deleted {KIND} {namespace}/{name}")
        raise


def _create_or_adopt(api: Any, manifest: Mapping[str, Any], report: Callable[[str], None]) -> None:
    """Creates the job; if a job of that name exists (an earlier attempt of a retried task made it), a failed
    one is replaced and any other adopted: owned by this task's pod from now on, and followed to its end."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        report(f"created {KIND} {namespace}/{name}")
        return
    except ApiException as error:
        if error.status != 409:
            raise
    state, _ = job_state(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    if state == "Failed":
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            body={"propagationPolicy": "Foreground"})
        _wait_deleted(api, namespace, name)
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        report(f"replaced the failed {KIND} {namespace}/{name} of an earlier attempt")
        return
    if manifest["metadata"].get("ownerReferences"):
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                           {"metadata": {"ownerReferences": manifest["metadata"]["ownerReferences"]}})
    report(f"adopted {KIND} {namespace}/{name} ({state}) from an earlier attempt")


def _wait_deleted(api: Any, namespace: str, name: str, timeout_seconds: float = 300, poll_seconds: float = 2) -> None:
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(poll_seconds)
    raise TimeoutError(f"{KIND} {namespace}/{name} still there {timeout_seconds:.0f} s after its deletion")
