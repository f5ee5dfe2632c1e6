"""Multi-node training as a TFJob: the manifest (strictly valid), and the task that runs it, against a loopback
server answering the Kubernetes custom-objects endpoints the kubernetes client calls."""

import json
from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client

from crnn.cluster.commands import TrainSpec
from crnn.cluster.job_task import train_as_tfjob
from crnn.cluster.targets import TARGETS
from crnn.cluster.tfjob import JobFailed, run_tfjob, tfjob_manifest
from crnn.tracking import Tracking
from tests.loopback_api import Request, serve

JOBS = "/apis/kubeflow.org/v1/namespaces/ml/tfjobs"
SPEC = TrainSpec(("/mnt/datasets/jobs/j/data/mjsynth/train",), "/mnt/datasets/jobs/j/out", preset="paper",
                 device="gpu", num_devices=8, tracking_uri="http://mlflow.kubeflow:5000", parent_run_id="abc")


class FakeKubernetes:
    """Stores TFJobs; each GET moves a job one condition further along ``conditions``."""

    def __init__(self, conditions=("Created", "Running", "Succeeded"), message: str = ""):
        self.conditions, self.message = conditions, message
        self.jobs: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.deleted: list[str] = []
        self.on_finish = lambda job: None

    def handle(self, request: Request):
        self.requests.append(request)
        if request.method == "POST" and request.path == JOBS:
            job = json.loads(request.body)
            self.jobs[job["metadata"]["name"]] = job | {"polls": 0}
            return 201, job
        name = request.path.removeprefix(JOBS + "/")
        if request.method == "DELETE":
            self.deleted.append(name)
            return 200, {"kind": "Status", "status": "Success"}
        job = self.jobs[name]
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


def test_a_job_that_succeeds_is_followed_to_the_end(kube):
    fake, api = kube
    lines: list[str] = []
    job = tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"])
    finished = run_tfjob(api, job, poll_seconds=0.01, report=lines.append)
    assert finished["status"]["conditions"][-1]["type"] == "Succeeded"
    assert lines == ["created TFJob ml/crnn-train-j", "TFJob crnn-train-j: Created", "TFJob crnn-train-j: Running",
                     "TFJob crnn-train-j: Succeeded"]
    assert json.loads(fake.requests[0].body)["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2
    assert not fake.deleted


def test_a_failed_job_fails_the_task_with_its_message(kube):
    fake, api = kube
    fake.conditions, fake.message = ("Created", "Running", "Failed"), "worker-1 exited with code 137"
    with pytest.raises(JobFailed, match="ml/crnn-train-j failed: worker-1 exited with code 137"):
        run_tfjob(api, tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 2, TARGETS["gpu"]), poll_seconds=0.01,
                  report=lambda line: None)


def test_a_job_past_its_time_is_deleted(kube):
    fake, api = kube
    fake.conditions = ("Created", "Running")
    with pytest.raises(TimeoutError, match="still Running"):
        run_tfjob(api, tfjob_manifest("crnn-train-j", "ml", "img", SPEC, 1, TARGETS["cpu"]), timeout_seconds=0.05,
                  poll_seconds=0.01, report=lambda line: None)
    assert fake.deleted == ["crnn-train-j"]


def test_the_task_trains_on_the_data_where_it_is_and_brings_the_model_back(kube, tmp_path, converted_dir):
    fake, api = kube
    mount = converted_dir.parent  # the converted data is on the datasets volume, which the workers mount

    def workers_train(job: dict) -> None:  # what the job's chief writes to the shared PVC
        command = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"]
        out = Path(command[command.index("--out") + 1])
        (out / "export").mkdir(parents=True, exist_ok=True)
        (out / "export" / "model.keras").write_text("weights")

    fake.on_finish = workers_train
    result = train_as_tfjob([converted_dir / "mjsynth" / "train"], converted_dir / "mjsynth" / "val",
                            str(tmp_path / "model"), "tiny", 5, 0, Tracking(), "gpu", 2, "crnn-pipeline/gpu:0.1.0",
                            "ml", "job-7", mount=mount, api=api)
    assert result["tfjob"] == "crnn-train-job-7" and result["workers"] == 2
    assert (tmp_path / "model" / "export" / "model.keras").read_text() == "weights"
    command = json.loads(fake.requests[0].body)["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"][0]["command"]
    assert command[command.index("--train") + 1] == str(converted_dir / "mjsynth" / "train")
    assert command[command.index("--val") + 1] == str(converted_dir / "mjsynth" / "val")
    assert command[command.index("--steps") + 1] == "5"


def test_data_off_the_volume_is_refused_before_a_job_starts(kube, tmp_path, converted_dir):
    fake, api = kube
    with pytest.raises(ValueError, match="not on the datasets volume"):
        train_as_tfjob([converted_dir / "mjsynth" / "train"], None, str(tmp_path / "model"), "tiny", 5, 0,
                       Tracking(), "gpu", 2, "img", "ml", "job-8", mount=tmp_path / "elsewhere", api=api)
    assert fake.requests == []
