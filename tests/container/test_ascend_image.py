"""The ascend image on the stand-in base (TensorFlow 2.6.5, tf.keras 2.6, Debian bullseye's Python 3.9: Ascend's
stack without CANN): the tiny preset trains there, is killed, resumes and exports; the NPU code path runs there
with the adapter's collectives passed in; the cpu image's steps take the model and read as it does; and
``--device npu`` says that CANN is missing."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.container.conftest import tool

pytestmark = pytest.mark.container

TESTS = Path(__file__).resolve().parent
# As a cluster runs the training pods: uid 1000, a read-only root file system, /tmp writable.
RUN = ("run", "--rm", "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--network", "host")
# The same images through both stacks: the logits of one fixed batch, printed as JSON.
READINGS = ("import json, sys, numpy as np; from crnn.model.export import Recognizer; r = Recognizer(sys.argv[1]); "
            "batch = np.random.default_rng(7).integers(0, 256, (6, 32, 100, 1)).astype('uint8'); "
            "print(json.dumps(np.asarray(r.model(batch, training=False)).tolist()))")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, converted_dir) -> Path:
    """A folder the containers' uid 1000 writes to (mounted at /work), holding a copy of the converted data
    it may read (mounted at /data)."""
    folder = tmp_path_factory.mktemp("ascend-image")
    shutil.copytree(converted_dir, folder / "data")
    subprocess.run(["chmod", "-R", "a+rX", str(folder / "data")], check=True)
    folder.chmod(0o777)
    return folder


def _run(image: str, *command: str, shared: Path, timeout: float = 600, check: bool = True,
         detach: bool = False) -> subprocess.CompletedProcess:
    mounts = ("-v", f"{shared}:/work", "-v", f"{shared / 'data'}:/data:ro", "-v", f"{TESTS}:/tests:ro")
    args = [tool(), *RUN, *(("-d",) if detach else ()), *mounts, image, *command]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed in {image}:\n{result.stderr[-3000:]}")
    return result


def test_the_image_is_ascends_stack(ascend_image, shared):
    script = ("import sys, tensorflow as tf, keras, os; print(sys.version.split()[0], tf.__version__, "
              "keras.__version__, os.getuid(), os.environ['CRNN_GIT_COMMIT'])")
    python, tensorflow, keras, uid, commit = _run(ascend_image, "python3", "-c", script, shared=shared).stdout.split()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert python.startswith("3.9.") and tensorflow == "2.6.5" and keras == "2.6.0"
    assert uid == "1000" and commit.removesuffix("-dirty") == head


def test_the_input_runs_untuned_on_tensorflow_2_6(ascend_image, shared):
    """TensorFlow 2.6 switches autotuning off where 2.7 and later do not (``without_tuning_thread``): the
    image's training and evaluation input run without the thread whose freeing can wait a minute."""
    script = ("from crnn.config import PRESETS; from crnn.data.input_pipeline import make_dataset\n"
              "for training in (True, False):\n"
              "    d = make_dataset('/data/mjsynth/train', PRESETS['tiny'].model, 4, training=training)\n"
              "    print(d.options().experimental_optimization.autotune, len(next(iter(d))[1]))")
    printed = _run(ascend_image, "python3", "-c", script, shared=shared).stdout.split()
    assert printed == ["False", "4", "False", "4"]


def test_tiny_training_is_killed_resumes_exports_and_the_cpu_image_takes_the_model(
        ascend_image, image, shared, mlflow_server):
    # Many steps: the tiny model trains so fast that a short run can end between two looks for a checkpoint.
    train = ["crnn", "train", "--device", "cpu", "--preset", "tiny", "--steps", "600", "--batch-size", "4",
             "--checkpoint-every", "5", "--train", "/data/mjsynth/train", "--val", "/data/mjsynth/val",
             "--out", "/work/trained", "--tracking-uri", mlflow_server.url]
    container = _run(ascend_image, *train, shared=shared, detach=True).stdout.strip()
    # Any checkpoint: the first is deleted once three newer ones are kept, which can fall between two looks.
    # Looked for often, so that the kill comes early in the run.
    checkpoints = shared / "trained" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("ckpt-*.index")):
        listed = subprocess.run([tool(), "ps", "-q", "--filter", f"id={container}"], capture_output=True,
                                text=True, timeout=60)
        # Podman's listing fails now and then while another container is being removed (podman issue 10225,
        # "container ... does not exist in database"): a failed listing is asked again, not taken for the end.
        ended = listed.returncode == 0 and not listed.stdout.strip()
        assert not ended, "the training container ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no checkpoint in 300 s ({listed.stderr.strip()[-300:]})"
        time.sleep(0.1)
    subprocess.run([tool(), "kill", container], capture_output=True, timeout=60)
    assert not (shared / "trained" / "export").exists(), "killed before the end"

    resumed = _run(ascend_image, *train, shared=shared)
    assert "resumed from /work/trained/checkpoints/ckpt-" in resumed.stderr
    assert "trained 600 steps" in resumed.stdout
    export = shared / "trained" / "export"
    assert sorted(p.name for p in export.iterdir()) == ["lineage.json", "recipe.json", "weights.h5"]

    # The cpu image's evaluate and register take it as they take the main stack's.
    _run(image, "crnn", "evaluate", "--model", "/work/trained/export", "--benchmark", "IC13=/data/IC13/test",
         "--out", "/work/scores", shared=shared)
    report = json.loads((shared / "scores" / "report.json").read_text())
    assert report["benchmarks"]["IC13"]["num_samples"] > 0
    registered = _run(image, "crnn", "register", "--model", "/work/trained/export", "--report",
                      "/work/scores/report.json", "--tracking-uri", mlflow_server.url, "--min-average", "0",
                      "--name", "crnn-npu-stack", shared=shared).stdout
    assert "registered crnn-npu-stack version 1" in registered
    serve = ("import cv2, mlflow.pyfunc, numpy as np; model = mlflow.pyfunc.load_model('models:/crnn-npu-stack/1'); "
             "png = cv2.imencode('.png', np.zeros((32, 100), np.uint8))[1].tobytes(); "
             "print(len(model.predict([png] * 3)))")
    served = _run(image, "env", f"MLFLOW_TRACKING_URI={mlflow_server.url}", "HOME=/tmp", "python", "-c", serve,
                  shared=shared).stdout.split()
    assert served[-1] == "3"  # the registered model, served as any other: one text per image

    # Both stacks read the same logits from the same weights.
    readings = [np.array(json.loads(_run(name, "python3", "-c", READINGS, "/work/trained/export",
                                         shared=shared).stdout)) for name in (ascend_image, image)]
    assert readings[0].shape == (6, 26, readings[0].shape[2])
    np.testing.assert_allclose(readings[0], readings[1], atol=1e-4)

    # Tracked as on the main stack, from MLflow 2.14's client to the 3.x server.
    run = MlflowClient(mlflow_server.url).get_run(json.loads((export / "lineage.json").read_text())["train_run_id"])
    assert run.data.params["train.steps"] == "600" and run.data.params["device"] == "cpu"
    assert "loss" in run.data.metrics and "val_accuracy" in run.data.metrics


def test_the_recipe_takes_the_same_steps_on_both_stacks(ascend_image, shared):
    """From the same weights on the same batches, three steps of SGD with Nesterov momentum, warmup, clipping and
    decoupled weight decay (Keras 3's own; tf.keras 2.6's through crnn.keras_compat) end at the same weights."""
    _run(ascend_image, "python3", "/tests/recipe_steps.py", "/data/mjsynth/train", "/work/steps-keras2.npz",
         shared=shared)
    subprocess.run([sys.executable, str(TESTS / "recipe_steps.py"), str(shared / "data" / "mjsynth" / "train"),
                    str(shared / "steps-keras3.npz")], capture_output=True, timeout=300, check=True)
    keras2, keras3 = np.load(shared / "steps-keras2.npz"), np.load(shared / "steps-keras3.npz")
    assert sorted(keras2.files) == sorted(keras3.files)
    ends = [name for name in keras3.files if name.startswith("end/")]
    for name in ends:
        np.testing.assert_array_equal(keras2["start/" + name[4:]], keras3["start/" + name[4:]])
    change = max(float(np.abs(keras3[name] - keras3["start/" + name[4:]]).max()) for name in ends)
    apart = max(float(np.abs(keras2[name] - keras3[name]).max()) for name in ends)
    assert change > 1e-3 and apart < 1e-3 * change, (apart, change)


def test_the_npu_code_path_runs_with_the_adapters_collectives(ascend_image, shared):
    printed = _run(ascend_image, "python3", "/tests/npu_path.py", "/data/mjsynth/train", "/work/npu-path",
                   shared=shared).stdout.strip().splitlines()[-1]
    calls = json.loads(printed)
    assert calls["steps"] == [2, 4] and calls["all_reduce"] >= 2  # the step's gradient, traced in each run
    assert calls["loss_scale_optimizer"] == 2  # mixed precision on an NPU: the backend's loss-scale optimiser
    # After each restore every variable (the model's and the optimiser's) goes out from rank 0.
    assert len(calls["broadcast"]) == 2 and calls["broadcast"][0] > calls["variables"]
    assert calls["export"] == ["lineage.json", "recipe.json", "weights.h5"]


# What the ascend-operator and Volcano give the `ascend` container of an AscendJob's Worker pod (CM_RANK 1) on a
# server where it got NPUs 4 and 5 (crnn/cluster/ascendjob.py says where each comes from).
OPERATOR_ENV = {"ASCEND_VISIBLE_DEVICES": "Ascend910-4,Ascend910-5", "CM_CHIEF_IP": "10.0.0.1",
                "CM_CHIEF_PORT": "2222", "CM_CHIEF_DEVICE": "0", "CM_WORKER_IP": "10.0.0.2", "CM_WORKER_SIZE": "4",
                "CM_LOCAL_WORKER": "2", "CM_RANK": "1"}


def test_the_pods_command_launches_one_rank_per_npu_on_the_image(ascend_image, shared):
    """The AscendJob pod's command on the image's Python 3.9: crnn launch-npu starts a rank per NPU with the
    operator's variables passed through; `crnn train --device npu` in each fails naming CANN, and so does the
    launcher, with the rank's code."""
    environment = [f"{key}={value}" for key, value in OPERATOR_ENV.items()]
    record = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in ('ASCEND_DEVICE_ID', "
              "'CRNN_LOCAL_RANK', 'CM_RANK', 'RANK_SIZE', 'HCCL_CONNECT_TIMEOUT')}))")
    _run(ascend_image, "env", *environment, "crnn", "launch-npu", "--log-dir", "/work/launch", "--", "python3",
         "-c", record, shared=shared)
    logs = {p.name: json.loads(p.read_text().strip().splitlines()[-1]) for p in (shared / "launch").glob("*.log")}
    assert sorted(logs) == ["rank-2.log", "rank-3.log"]  # CM_RANK 1 x 2 NPUs + the local index
    assert [logs[f"rank-{r}.log"]["ASCEND_DEVICE_ID"] for r in (2, 3)] == ["0", "1"]  # the container's own ids
    assert all(env["CM_RANK"] == "1" and env["RANK_SIZE"] is None and env["HCCL_CONNECT_TIMEOUT"] == "600"
               for env in logs.values())
    train = ["crnn", "train", "--device", "npu", "--preset", "tiny", "--steps", "3", "--train", "/data/mjsynth/train",
             "--out", "/work/npu-launched"]
    result = _run(ascend_image, "env", *environment, "crnn", "launch-npu", "--", *train, shared=shared, check=False)
    assert result.returncode == 2 and "CANN" in result.stderr + result.stdout


def test_device_npu_says_cann_is_missing(ascend_image, shared):
    result = _run(ascend_image, "crnn", "train", "--device", "npu", "--preset", "tiny", "--steps", "3",
                  "--train", "/data/mjsynth/train", "--out", "/work/npu", shared=shared,
                  check=False)
    assert result.returncode == 2
    assert "npu_device" in result.stderr and "CANN" in result.stderr and "ASCEND_BASE" in result.stderr
