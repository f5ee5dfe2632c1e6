"""Where a compiled pipeline runs: the images, the accelerator the train task asks for, and where it may be
scheduled. One entry per ``crnn pipeline compile --target``; ``local`` is kfp.local (no cluster settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

DATASETS_PVC = "crnn-datasets"  # manifests/base: the PVC datasets and multi-node jobs share
DATASETS_MOUNT = "/mnt/datasets"
S3_SECRET = "crnn-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: s3:// sources and mirrors
MLFLOW_CLIENT_SECRET = "mlflow-client"  # MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD (basic auth)
SERVICE_ACCOUNT = "crnn-pipeline"  # manifests/base: may create and watch TFJobs, nothing more
NAMESPACE = "kubeflow"  # manifests/base: where a standalone KFP runs the pipeline's pods
DEFAULT_REGISTRY, DEFAULT_TAG = "crnn-pipeline", "0.1.0"


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Target:
    name: str
    image: str  # the image of the train task: images/Dockerfile.<image>
    device: str  # crnn train --device
    devices_per_node: int
    accelerator: str | None = None  # the extended resource the train task requests
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()

    @property
    def on_cluster(self) -> bool:
        return self.name != "local"


TARGETS = {
    "local": Target("local", "cpu", "cpu", 1),
    "cpu": Target("cpu", "cpu", "cpu", 1),
    "gpu": Target("gpu", "gpu", "gpu", 8, "nvidia.com/gpu", {}, (Toleration("nvidia.com/gpu"),)),
    "ascend": Target("ascend", "ascend", "npu", 8, "huawei.com/Ascend910", {"accelerator": "huawei-Ascend910"},
                     (Toleration("huawei.com/Ascend910"),)),
}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def image(kind: str, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    """``<registry>/<kind>:<tag>``, as ``make images`` tags them."""
    return f"{registry}/{kind}:{tag}"
