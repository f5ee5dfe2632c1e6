"""Training jobs of a training operator (a TFJob, an AscendJob): what every one of ours shares, and running one
to the end.

A pipeline task creates the job in its own namespace, owned by its pod, reports each change of its conditions,
and fails when the job fails; if the task itself is stopped, it deletes the job; a retried task takes over the job
of its earlier attempt. Both operators report the conditions of Kubeflow's common job API (Created, Running,
Restarting, Succeeded, Failed).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crnn.cluster.targets import DATASETS_MOUNT, DATASETS_PVC, MLFLOW_CLIENT_SECRET, Target

NONROOT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}
PART_OF = {"app.kubernetes.io/part-of": "crnn-pipeline"}


@dataclass(frozen=True)
class JobKind:
    group: str
    version: str
    plural: str
    kind: str


# The training operator's TFJob; the ascend-operator's AscendJob (mind-cluster component/ascend-operator).
TFJOB = JobKind("kubeflow.org", "v1", "tfjobs", "TFJob")
ASCENDJOB = JobKind("mindxdl.gitee.com", "v1", "ascendjobs", "AscendJob")
KINDS = {kind.kind: kind for kind in (TFJOB, ASCENDJOB)}

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


def training_pod(container: str, image: str, command: list[str], target: Target, resources: JobResources,
                 pvc: str = DATASETS_PVC) -> dict[str, Any]:
    """The pod spec of a training job's replica: one container ``container`` running ``command`` on
    ``target.devices_per_node`` accelerators, with the tracking credentials, the datasets volume and a writable
    /tmp, as uid 1000 on a read-only root, placed where ``target`` says."""
    limits = {"cpu": resources.cpu, "memory": resources.memory}
    if target.accelerator:
        limits[target.accelerator] = str(target.devices_per_node)
    main = {
        "name": container,
        "image": image,
        "command": command,
        "env": [{"name": key, "valueFrom": {"secretKeyRef": {"name": MLFLOW_CLIENT_SECRET, "key": key,
                                                              "optional": True}}}
                for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")],
        "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits},
        "volumeMounts": [{"name": "datasets", "mountPath": DATASETS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": CONTAINER_SECURITY,
    }
    pod: dict[str, Any] = {
        "securityContext": NONROOT,
        "containers": [main],
        "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    if target.node_selector:
        pod["nodeSelector"] = dict(target.node_selector)
    if target.tolerations:
        pod["tolerations"] = [{"key": t.key, "operator": t.operator, "effect": t.effect} for t in target.tolerations]
    return pod


def job_resource(kind: JobKind, name: str, namespace: str, spec: dict[str, Any], labels: Mapping[str, str],
                 owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The custom resource: ``spec`` under metadata of ours, owned by ``owner`` (``owner_pod``) when given."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {**PART_OF, **labels}}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {"apiVersion": f"{kind.group}/{kind.version}", "kind": kind.kind, "metadata": metadata, "spec": spec}


def owner_pod(name: str, uid: str) -> dict[str, Any]:
    """An ownerReference to the task's pod: Kubernetes' garbage collector deletes the job with the pod, so a task
    pod evicted or deleted leaks no job and no accelerators. Not blocking the pod's deletion, which would need
    the right to update pods' finalizers."""
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "controller": False,
            "blockOwnerDeletion": False}




class JobFailed(RuntimeError):
    pass


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """The latest true condition's (type, message): Created, Running, Restarting, Succeeded or Failed."""
    conditions = [c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"]
    if not conditions:
        return "Pending", ""
    latest = conditions[-1]
    return latest["type"], latest.get("message", "")


def job_kind(manifest: Mapping[str, Any]) -> JobKind:
    return KINDS[manifest["kind"]]


def run_job(api: Any, manifest: Mapping[str, Any], timeout_seconds: float = 7 * 24 * 3600,
            poll_seconds: float = 10.0, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Creates the job with ``api`` (a ``kubernetes.client.CustomObjectsApi``), reports each state change, and
    returns the finished job; raises ``JobFailed`` when it fails, ``TimeoutError`` past the timeout. The job is
    deleted if this is interrupted or times out (its pods would otherwise hold the accelerators)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    k = job_kind(manifest)
    if threading.current_thread() is threading.main_thread():  # a stopped pipeline task gets SIGTERM
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _create_or_adopt(api, manifest, report)
    deadline = time.monotonic() + timeout_seconds
    seen = None
    try:
        while True:
            job = api.get_namespaced_custom_object(k.group, k.version, namespace, k.plural, name)
            state = job_state(job)
            if state != seen:
                report(f"{k.kind} {name}: {state[0]}" + (f" ({state[1]})" if state[1] else ""))
                seen = state
            if state[0] == "Succeeded":
                return job
            if state[0] == "Failed":
                raise JobFailed(f"{k.kind} {namespace}/{name} failed: {state[1] or 'no message'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{k.kind} {namespace}/{name} still {state[0]} after {timeout_seconds:.0f} s")
            time.sleep(poll_seconds)
    except (KeyboardInterrupt, SystemExit, TimeoutError):
        api.delete_namespaced_custom_object(k.group, k.version, namespace, k.plural, name)
        report(f"deleted {k.kind} {namespace}/{name}")
        raise


def _create_or_adopt(api: Any, manifest: Mapping[str, Any], report: Callable[[str], None]) -> None:
    """Creates the job; if a job of that name exists (an earlier attempt of a retried task made it), a failed
    one is replaced and any other adopted: owned by this task's pod from now on, and followed to its end."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    k = job_kind(manifest)
    try:
        api.create_namespaced_custom_object(k.group, k.version, namespace, k.plural, manifest)
        report(f"created {k.kind} {namespace}/{name}")
        return
    except ApiException as error:
        if error.status != 409:
            raise
    state, _ = job_state(api.get_namespaced_custom_object(k.group, k.version, namespace, k.plural, name))
    if state == "Failed":
        api.delete_namespaced_custom_object(k.group, k.version, namespace, k.plural, name,
                                            body={"propagationPolicy": "Foreground"})
        _wait_deleted(api, k, namespace, name)
        api.create_namespaced_custom_object(k.group, k.version, namespace, k.plural, manifest)
        report(f"replaced the failed {k.kind} {namespace}/{name} of an earlier attempt")
        return
    if manifest["metadata"].get("ownerReferences"):
        api.patch_namespaced_custom_object(k.group, k.version, namespace, k.plural, name,
                                           {"metadata": {"ownerReferences": manifest["metadata"]["ownerReferences"]}})
    report(f"adopted {k.kind} {namespace}/{name} ({state}) from an earlier attempt")


def _wait_deleted(api: Any, k: JobKind, namespace: str, name: str, timeout_seconds: float = 300,
                  poll_seconds: float = 2) -> None:
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(k.group, k.version, namespace, k.plural, name)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        time.sleep(poll_seconds)
    raise TimeoutError(f"{k.kind} {namespace}/{name} still there {timeout_seconds:.0f} s after its deletion")
