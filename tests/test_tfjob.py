"""Multi-node training as a TFJob: the manifest (strictly valid), and the task that runs it, against a loopback
server answering the Kubernetes custom-objects endpoints the kubernetes client calls."""

import json
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client

from crnn.cluster import job_task
from crnn.cluster.ascendjob import ascendjob_manifest
from crnn.cluster.commands import TrainSpec
from crnn.cluster.job_task import train_as_job
from crnn.cluster.jobs import JobFailed, JobPolicy, owner_pod, run_job
from crnn.cluster.targets import TARGETS
from crnn.cluster.tfjob import tfjob_manifest
from crnn.tracking import Tracking
from tests.loopback_api import Request, serve

NAMESPACE = "ml"
SPEC = TrainSpec(("/mnt/datasets/jobs/j/data/mjsynth/train",), "/mnt/datasets/jobs/j/out", preset="paper",
                 device="gpu", num_devices=8, tracking_uri="http://mlflow.kubeflow:5000", parent_run_id="abc")


class FakeKubernetes:
    """Stores TFJobs; each GET moves a job one condition further along ``conditions``."""

    def __init__(self, conditions=("Created", "Running", "Succeeded"), message: str = "", group: str = "kubeflow.org",
                 plural: str = "tfjobs"):
        self.group, self.plural = group, plural
        self.conditions, self.message = conditions, message
        self.jobs: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.deleted: list[str] = []
        self.on_finish = lambda job: None
        self.namespace = NAMESPACE

    @property
    def jobs_path(self) -> str:
        return f"/apis/{self.group}/v1/namespaces/{self.namespace}/{self.plural}"

    def handle(self, request: Request):
        self.requests.append(request)
        if request.method == "POST" and request.path == self.jobs_path:
            job = json.loads(request.body)
            if job["metadata"]["name"] in self.jobs:
                return 409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}
            self.jobs[job["metadata"]["name"]] = job | {"polls": 0}
            return 201, job
        name = request.path.removeprefix(self.jobs_path + "/")
        if name not in self.jobs:
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        if request.method == "DELETE":
            self.deleted.append(name)
            del self.jobs[name]
            return 200, {"kind": "Status", "status": "Success"}
        job = self.jobs[name]
        if request.method == "PATCH":  # a JSON merge patch of the metadata
            job["metadata"] |= json.loads(request.body)["metadata"]
            return 200, job
        step = min(job["polls"], len(self.conditions) - 1)
        job["polls"] += 1
        job["status"] = {"conditions": [{"type": kind, "status": "True", "message": self.message}
                                        for kind in self.conditions[:step + 1]]}
        if self.conditions[step] == "Succeeded":
            self.on_finish(job)
        return 200, {k: v for k, v in job.items() if k != "polls"}


@pytest.fixture
def kube():
    fake = FakeKubernetes()
    server, url = serve(fake)
    configuration = client.Configuration()
    configuration.host = url
    yield fake, client.CustomObjectsApi(client.ApiClient(configuration))
    server.shutdown()


def test_the_manifest_is_a_strictly_valid_tfjob_of_workers_on_8_gpus():
    job = tfjob_manifest("crnn-train-j", "ml", "crnn-pipeline/gpu:0.1.0", SPEC, 2, TARGETS["gpu"])
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    pod = worker["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == "tensorflow"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["command"][:2] == ["crnn", "train"] and "--num-devices" in container["command"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The pod inside the custom resource, checked against the Kubernetes schema as strictly as any pod.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "worker"},
                                  "template": worker["template"]}, "1.32.0", strict=True)
    with pytest.raises(ValueError, match="at least one worker"):
        tfjob_manifest("x", "ml", "i", SPEC, 0, TARGETS["gpu"])


def test_the_job_ends_and_cleans_up_after_itself():
    job = tfjob_manifest("crnn-train-j", "team-ocr", "img", SPEC, 2, TARGETS["gpu"], owner=owner_pod("task-pod", "u1"),
                         policy=JobPolicy(deadline_seconds=3600, ttl_seconds=600))
    assert job["metadata"]["namespace"] == "team-ocr"
    assert job["metadata"]["ownerReferences"] == [owner_pod("task-pod", "u1")]
    policy = job["spec"]["runPolicy"]
    assert (policy["activeDeadlineSeconds"], policy["ttlSecondsAfterFinished"]) == (3600, 600)
    template = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    # No Istio sidecar in the workers: it would never exit, and the job never complete.
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert "ownerReferences" not in tfjob_manifest("j", "ml", "img", SPEC, 1, TARGETS["cpu"])["metadata"]


def test_a_retried_task_adopts_the_running_job_of_its_earlier_attempt(kube):
    fake, api = kube
    first = tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"], owner=owner_pod("attempt-1", "u1"))
    api.create_namespaced_custom_object("kubeflow.org", "v1", "ml", "tfjobs", first)  # then the task pod died
    lines: list[str] = []
    retried = tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"], owner=owner_pod("attempt-2", "u2"))
    finished = run_job(api, retried, poll_seconds=0.01, report=lines.append)
    assert finished["status"]["conditions"][-1]["type"] == "Succeeded"
    assert lines[0] == "adopted TFJob ml/crnn-train-j (Created) from an earlier attempt"
    assert fake.jobs["crnn-train-j"]["metadata"]["ownerReferences"] == [owner_pod("attempt-2", "u2")]
    assert not fake.deleted


def test_a_retried_task_replaces_the_failed_job_of_its_earlier_attempt(kube):
    fake, api = kube
    failed = tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"])
    api.create_namespaced_custom_object("kubeflow.org", "v1", "ml", "tfjobs", failed)
    fake.jobs["crnn-train-j"]["polls"] = 99  # far along its conditions: Failed
    fake.conditions = ("Created", "Running", "Failed")
    lines: list[str] = []
    with pytest.raises(JobFailed):  # the new job fails too, in this fake: what matters is that it was made anew
        run_job(api, tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"]), poll_seconds=0.01,
                  report=lines.append)
    assert lines[0] == "replaced the failed TFJob ml/crnn-train-j of an earlier attempt"
    assert fake.deleted == ["crnn-train-j"]
    deletion = next(r for r in fake.requests if r.method == "DELETE")
    assert json.loads(deletion.body)["propagationPolicy"] == "Foreground"  # its pods go first


def test_a_job_that_succeeds_is_followed_to_the_end(kube):
    fake, api = kube
    lines: list[str] = []
    job = tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"])
    finished = run_job(api, job, poll_seconds=0.01, report=lines.append)
    assert finished["status"]["conditions"][-1]["type"] == "Succeeded"
    assert lines == ["created TFJob ml/crnn-train-j", "TFJob crnn-train-j: Created", "TFJob crnn-train-j: Running",
                     "TFJob crnn-train-j: Succeeded"]
    assert json.loads(fake.requests[0].body)["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2
    assert not fake.deleted


def test_a_failed_job_fails_the_task_with_its_message(kube):
    fake, api = kube
    fake.conditions, fake.message = ("Created", "Running", "Failed"), "worker-1 exited with code 137"
    with pytest.raises(JobFailed, match="ml/crnn-train-j failed: worker-1 exited with code 137"):
        run_job(api, tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"]), poll_seconds=0.01,
                  report=lambda line: None)


def test_a_job_past_its_time_is_deleted(kube):
    fake, api = kube
    fake.conditions = ("Created", "Running")
    with pytest.raises(TimeoutError, match="still Running"):
        run_job(api, tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 1, TARGETS["cpu"]), timeout_seconds=0.05,
                  poll_seconds=0.01, report=lambda line: None)
    assert fake.deleted == ["crnn-train-j"]


def test_the_task_trains_on_the_data_where_it_is_and_brings_the_model_back(kube, tmp_path, converted_dir,
                                                                          monkeypatch):
    fake, api = kube
    mount = converted_dir.parent  # the converted data is on the datasets volume, which the workers mount
    monkeypatch.setenv("KFP_POD_NAME", "crnn-training-x7k2p-system-container-impl-123")
    monkeypatch.setenv("KFP_POD_UID", "5a1b")
    (tmp_path / "namespace").write_text("team-ocr\n")  # as the kubelet mounts it beside the token
    monkeypatch.setattr(job_task, "NAMESPACE_FILE", tmp_path / "namespace")

    def workers_train(job: dict) -> None:  # what the job's chief writes to the shared PVC
        command = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"]
        out = Path(command[command.index("--out") + 1])
        (out / "export").mkdir(parents=True, exist_ok=True)
        (out / "export" / "model.keras").write_text("weights")

    fake.on_finish = workers_train
    fake.namespace = "team-ocr"
    result = train_as_job([converted_dir / "mjsynth" / "train"], converted_dir / "mjsynth" / "val",
                            mount / "runs" / "job-7" / "train", str(tmp_path / "model"), "tiny", 5, 0, Tracking(),
                            "gpu", 2, "crnn-pipeline/gpu:0.1.0", "job-7", mount=mount, api=api)
    assert result["job"] == "TFJob/crnn-train-job-7" and result["workers"] == 2 and result["namespace"] == "team-ocr"
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["export"]
    assert (tmp_path / "model" / "export" / "model.keras").read_text() == "weights"
    job = json.loads(fake.requests[0].body)
    assert fake.requests[0].path == "/apis/kubeflow.org/v1/namespaces/team-ocr/tfjobs"  # the task's own namespace
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "crnn-training-x7k2p-system-container-impl-123", "uid": "5a1b",
        "controller": False, "blockOwnerDeletion": False}]
    command = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--train") + 1] == str(converted_dir / "mjsynth" / "train")
    assert command[command.index("--val") + 1] == str(converted_dir / "mjsynth" / "val")
    assert command[command.index("--steps") + 1] == "5"
    assert command[command.index("--out") + 1] == str(mount / "runs" / "job-7" / "train")


def test_data_off_the_volume_is_refused_before_a_job_starts(kube, tmp_path, converted_dir):
    fake, api = kube
    with pytest.raises(ValueError, match="not on the datasets volume"):
        train_as_job([converted_dir / "mjsynth" / "train"], None, tmp_path / "elsewhere" / "runs" / "job-8",
                       str(tmp_path / "model"), "tiny", 5, 0, Tracking(), "gpu", 2, "img", "job-8", namespace="ml",
                       mount=tmp_path / "elsewhere", api=api)
    assert fake.requests == []


# --- NPUs: an AscendJob ------------------------------------------------------------------------------------------

NPU_SPEC = TrainSpec(("/mnt/datasets/jobs/j/data/mjsynth/train",), "/mnt/datasets/jobs/j/out", preset="paper",
                     device="npu", num_devices=8, tracking_uri="http://mlflow.kubeflow:5000", parent_run_id="abc")


@pytest.mark.parametrize("nodes", [1, 3])
def test_the_ascendjob_is_valid_against_its_crd_and_meets_the_operators_rules(nodes):
    """Checked against manifests/crds/ascendjob.yaml (written from the ascend-operator's CRD of mind-cluster
    v26.1.0) as strictly as the API server would, and against the operator's own validation (tools/
    validate_manifests.py: framework label, one Chief, a container named ascend)."""
    from tools.validate_manifests import check_object, load_crd_schemas

    job = ascendjob_manifest("crnn-train-j", "ml", "crnn-pipeline/ascend:0.1.0", NPU_SPEC, nodes, TARGETS["ascend"])
    assert check_object(job, load_crd_schemas()) == []
    replicas = job["spec"]["replicaSpecs"]
    assert replicas["Chief"]["replicas"] == 1 and replicas.get("Worker", {}).get("replicas", 0) == nodes - 1
    assert job["spec"]["runPolicy"]["schedulingPolicy"]["minAvailable"] == nodes  # all pods start, or none
    assert job["spec"]["schedulerName"] == "volcano" and job["metadata"]["labels"]["framework"] == "tensorflow"
    template = replicas["Chief"]["template"]
    [container] = template["spec"]["containers"]
    assert container["name"] == "ascend" and container["ports"] == [{"name": "ascendjob-port", "containerPort": 2222}]
    assert container["resources"]["limits"]["huawei.com/Ascend910"] == "8"
    # One training process per NPU the pod was given, each joined by the adapter through the CM_* variables.
    launcher, train = container["command"][:container["command"].index("--")], container["command"]
    assert launcher == ["crnn", "launch-npu"] and train[train.index("--") + 1:][:2] == ["crnn", "train"]
    assert train[train.index("--device") + 1] == "npu" and "--num-devices" not in train
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["ASCEND_VISIBLE_DEVICES"] == {"fieldRef": {"fieldPath": "metadata.annotations['huawei.com/Ascend910']"}}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "chief"},
                                  "template": template}, "1.32.0", strict=True)
    with pytest.raises(ValueError, match="trains on NPUs"):
        ascendjob_manifest("x", "ml", "i", SPEC, 1, TARGETS["gpu"])


def test_the_ascend_task_runs_an_ascendjob_and_brings_the_model_back(tmp_path, converted_dir):
    fake = FakeKubernetes(group="mindxdl.gitee.com", plural="ascendjobs")
    server, url = serve(fake)
    configuration = client.Configuration()
    configuration.host = url
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    mount = converted_dir.parent

    def chief_trains(job: dict) -> None:  # the chief's rank 0 writes the export, here as the NPU stack does
        command = job["spec"]["replicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["command"]
        out = Path(command[command.index("--out") + 1])
        (out / "export").mkdir(parents=True, exist_ok=True)
        (out / "export" / "weights.h5").write_text("weights")

    fake.on_finish = chief_trains
    try:
        result = train_as_job([converted_dir / "mjsynth" / "train"], None, mount / "runs" / "job-9" / "train",
                              str(tmp_path / "model"), "tiny", 5, 0, Tracking(), "ascend", 2,
                              "crnn-pipeline/ascend:0.1.0", "job-9", namespace="ml", mount=mount, api=api)
    finally:
        server.shutdown()
    assert result["job"] == "AscendJob/crnn-train-job-9" and result["workers"] == 2
    assert fake.requests[0].path == "/apis/mindxdl.gitee.com/v1/namespaces/ml/ascendjobs"
    assert (tmp_path / "model" / "export" / "weights.h5").read_text() == "weights"
