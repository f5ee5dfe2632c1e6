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
from crnn.cluster.jobs import ASCENDJOB, SIDECAR_OPT_OUT, JobPolicy, JobResources, job_resource, training_pod
from crnn.cluster.targets import DATASETS_PVC, Target

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
                "spec": _pod(image, spec, target, resources, pvc, policy)}
    replicas = {"Chief": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "OnFailure", "template": template}
    return job_resource(ASCENDJOB, name, namespace, {
        "schedulerName": "volcano",
        # A failed pod restarts and every rank resumes from the latest checkpoint on the PVC; all pods start
        # together or none (Volcano's gang), since HCCL waits for every rank.
        "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3,
                      "activeDeadlineSeconds": policy.deadline_seconds,
                      "ttlSecondsAfterFinished": policy.ttl_seconds,
                      "schedulingPolicy": {"minAvailable": nodes, "queue": "default"}},
        "successPolicy": "AllWorkers",
        "replicaSpecs": replicas,
    }, labels={"framework": "tensorflow", **RING}, owner=owner)


def _pod(image: str, spec: TrainSpec, target: Target, resources: JobResources, pvc: str,
         policy: JobPolicy) -> dict[str, Any]:
    pod = training_pod(CONTAINER, image, ["crnn", "launch-npu", "--", *train_command(spec)], target, resources, pvc)
    [container] = pod["containers"]
    container["env"][:0] = [
        # The NPUs Volcano chose (Ascend910-N names), as Ascend's job samples pass them to the runtime.
        {"name": "ASCEND_VISIBLE_DEVICES",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['huawei.com/Ascend910']"}}},
        {"name": "XDL_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    ]
    container["ports"] = [dict(CHIEF_PORT)]
    container["volumeMounts"].append({"name": "ascend-driver", "mountPath": DRIVER, "readOnly": True})
    pod["volumes"].append({"name": "ascend-driver", "hostPath": {"path": DRIVER, "type": "Directory"}})
    # The operator reads no runPolicy.activeDeadlineSeconds (mind-cluster v26.1.0): the kubelet stops each pod
    # past the deadline instead.
    return pod | {"automountServiceAccountToken": False, "activeDeadlineSeconds": policy.deadline_seconds}
