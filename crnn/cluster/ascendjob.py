"""NPU training as an AscendJob (``mindxdl.gitee.com/v1``, the ascend-operator of Ascend's mind-cluster): the
manifest; ``crnn.cluster.jobs`` runs it.

Why an AscendJob and not a TFJob or a Volcano Job: on an Ascend cluster the device plugin, in Volcano mode, gives
NPUs only to pods Volcano placed, and only the ascend-operator (or, for Volcano Jobs, the retired hccl-controller)
tells the pods who their peers are; a TFJob gets neither. The operator gives every pod of a ``framework:
tensorflow`` job the ``CM_*`` variables (``CM_CHIEF_IP``/``PORT``/``DEVICE``, ``CM_WORKER_SIZE``,
``CM_LOCAL_WORKER``, ``CM_RANK``), from which the TF adapter forms the HCCL group through the chief itself, so no
rank table and no device IPs are needed; Volcano gang-schedules the pods. ``crnn launch-npu`` in each pod starts
one training process per NPU the pod was given and passes the variables through.

Facts from mind-cluster v26.1.0, component/ascend-operator (the operator's own validation: a ``framework`` label;
for TensorFlow a ``Chief`` of one replica and optional ``Worker`` replicas; a container named ``ascend``;
``successPolicy`` "" or ``AllWorkers``; the chief's port ``ascendjob-port``) and mindxdl-deploy's TensorFlow
AscendJob samples (node labels, the driver mount, ``ASCEND_VISIBLE_DEVICES`` from Volcano's annotation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crnn.cluster.commands import TrainSpec, train_command
from crnn.cluster.jobs import (
    ASCENDJOB,
    CONTAINER_SECURITY,
    NONROOT,
    PART_OF,
    SIDECAR_OPT_OUT,
    JobPolicy,
    JobResources,
)
from crnn.cluster.targets import DATASETS_MOUNT, DATASETS_PVC, MLFLOW_CLIENT_SECRET, Target

CONTAINER = "ascend"  # the operator injects its variables into this container only
CHIEF_PORT = {"name": "ascendjob-port", "containerPort": 2222}  # where CM_CHIEF_PORT points
RING = {"ring-controller.atlas": "ascend-910"}  # an 8 x Ascend 910 server's job
DRIVER = "/usr/local/Ascend/driver"  # the host's NPU driver, which CANN's libraries load


def ascendjob_manifest(name: str, namespace: str, image: str, spec: TrainSpec, nodes: int, target: Target,
                       resources: JobResources = JobResources(), pvc: str = DATASETS_PVC,
                       owner: Mapping[str, Any] | None = None, policy: JobPolicy = JobPolicy()) -> dict[str, Any]:
    """An AscendJob of ``nodes`` servers, ``target.devices_per_node`` NPUs each: the Chief and ``nodes`` - 1
    Workers, all training (the chief's rank 0 writes checkpoints and the export); owned by ``owner`` when given."""
    if nodes < 1:
        raise ValueError(f"a training job needs at least one node, got {nodes}")
    if target.device != "npu":
        raise ValueError(f"an AscendJob trains on NPUs; target {target.name} trains on {target.device}")
    template = {"metadata": {"labels": {"app": "crnn-train", **RING, **SIDECAR_OPT_OUT},
                             "annotations": dict(SIDECAR_OPT_OUT)},
                "spec": _pod(image, spec, target, resources, pvc) | {
                    # The operator reads no runPolicy.activeDeadlineSeconds (mind-cluster v26.1.0): the kubelet
                    # stops each pod past the deadline instead.
                    "activeDeadlineSeconds": policy.deadline_seconds}}
    replicas = {"Chief": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "OnFailure", "template": template}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {**PART_OF, "framework": "tensorflow", **RING}}
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": f"{ASCENDJOB.group}/{ASCENDJOB.version}",
        "kind": ASCENDJOB.kind,
        "metadata": metadata,
        "spec": {
            "schedulerName": "volcano",
            # A failed pod restarts and every rank resumes from the latest checkpoint on the PVC; all pods start
            # together or none (Volcano's gang), since HCCL waits for every rank.
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3,
                          "activeDeadlineSeconds": policy.deadline_seconds,
                          "ttlSecondsAfterFinished": policy.ttl_seconds,
                          "schedulingPolicy": {"minAvailable": nodes, "queue": "default"}},
            "successPolicy": "AllWorkers",
            "replicaSpecs": replicas,
        },
    }


def _pod(image: str, spec: TrainSpec, target: Target, resources: JobResources, pvc: str) -> dict[str, Any]:
    limits = {"cpu": resources.cpu, "memory": resources.memory, target.accelerator: str(target.devices_per_node)}
    env = [
        # The NPUs Volcano chose (Ascend910-N names), as Ascend's job samples pass them to the runtime.
        {"name": "ASCEND_VISIBLE_DEVICES",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['huawei.com/Ascend910']"}}},
        {"name": "XDL_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        *({"name": key, "valueFrom": {"secretKeyRef": {"name": MLFLOW_CLIENT_SECRET, "key": key, "optional": True}}}
          for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")),
    ]
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["crnn", "launch-npu", "--", *train_command(spec)],
        "env": env,
        "ports": [dict(CHIEF_PORT)],
        "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits},
        "volumeMounts": [{"name": "datasets", "mountPath": DATASETS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "ascend-driver", "mountPath": DRIVER, "readOnly": True}],
        "securityContext": CONTAINER_SECURITY,
    }
    return {
        "automountServiceAccountToken": False,
        "securityContext": NONROOT,
        "containers": [container],
        "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": pvc}},
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "ascend-driver", "hostPath": {"path": DRIVER, "type": "Directory"}}],
        "nodeSelector": dict(target.node_selector),
        "tolerations": [{"key": t.key, "operator": t.operator, "effect": t.effect} for t in target.tolerations],
    }
