"""The compiled pipeline for each cluster target: committed, up to date, and asking for what the target needs."""

from pathlib import Path

import pytest
import yaml

from crnn.cli import main
from crnn.cluster.targets import DATASETS_MOUNT
from crnn.credentials import SECRETS_MOUNT
from crnn.job_id import RUN_ID_ENV, RUN_ID_FIELD
from pipelines.crnn_pipeline import compile_pipeline

COMPILED = Path(__file__).parent.parent / "pipelines" / "compiled"
COMMITTED = {"cpu.yaml": ("cpu", 1), "gpu.yaml": ("gpu", 1), "ascend.yaml": ("ascend", 1),
             "gpu-2-nodes.yaml": ("gpu", 2), "ascend-2-nodes.yaml": ("ascend", 2)}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """file name -> (pipeline spec, platform spec), compiled now from the code."""
    out = tmp_path_factory.mktemp("compiled")
    specs = {}
    for name, (target, nodes) in COMMITTED.items():
        compile_pipeline(out / name, target, nodes)
        specs[name] = tuple(yaml.safe_load_all((out / name).read_text()))
        specs[name + ".text"] = (out / name).read_text()
    return specs


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_the_committed_yaml_is_what_the_code_compiles(compiled, name):
    assert (COMPILED / name).read_text() == compiled[name + ".text"], (
        f"pipelines/compiled/{name} is out of date with the code: run `make compile` and commit it")


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_no_task_installs_packages_at_run_time(compiled, name):
    """The images carry the project and its pinned dependencies; a task that pip-installed would not."""
    assert "pip install" not in compiled[name + ".text"] and "ensurepip" not in compiled[name + ".text"]
    commands = [e["container"]["command"] for e in _executors(compiled[name][0]).values()]
    assert all(command[:2] == ["sh", "-ec"] for command in commands)  # KFP's launcher: why images keep sh


def _executors(spec: dict) -> dict:
    return spec["deploymentSpec"]["executors"]


def _platform(platform: dict) -> dict:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize(("name", "nodes"), [("ascend.yaml", 1), ("ascend-2-nodes.yaml", 2)])
def test_ascend_trains_as_an_ascendjob_on_one_node_or_several(compiled, name, nodes):
    """On Ascend clusters NPUs go to the pods Volcano schedules: the task (cpu image) only creates and watches
    the AscendJob whose pods (ascend image) hold the NPUs, on one node as on several."""
    spec, platform = compiled[name]
    executors = _executors(spec)
    assert "exec-train" not in executors
    watcher = executors["exec-train-job"]["container"]
    assert watcher["image"] == "crnn-pipeline/cpu:0.1.0" and "accelerator" not in watcher.get("resources", {})
    k8s = _platform(platform)["exec-train-job"]
    assert "nodeSelector" not in k8s and k8s["pvcMount"][0]["constant"] == "crnn-datasets"
    job = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train-job"]["inputs"]["parameters"]
    assert job["target"]["runtimeValue"]["constant"] == "ascend"
    assert job["workers"]["runtimeValue"]["constant"] == nodes
    assert job["image"]["runtimeValue"]["constant"] == "crnn-pipeline/ascend:0.1.0"


def test_gpu_trains_on_8_gpus_and_other_tasks_stay_on_cpu_images(compiled):
    spec, platform = compiled["gpu.yaml"]
    executors = _executors(spec)
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert executors["exec-train"]["container"]["image"] == "crnn-pipeline/gpu:0.1.0"
    assert {e["container"]["image"] for n, e in executors.items() if n != "exec-train"} == {
        "crnn-pipeline/cpu:0.1.0"}
    assert "nodeSelector" not in _platform(platform)["exec-train"]


def test_secrets_pvc_retries_caching_and_the_exit_handler(compiled):
    spec, platform = compiled["cpu.yaml"]
    k8s = _platform(platform)
    tracked = {"exec-start-run", "exec-log-data-steps", "exec-train", "exec-evaluate", "exec-register",
               "exec-finish-run"}
    for executor in tracked:
        [secret] = k8s[executor]["secretAsVolume"]
        assert secret == {"secretName": "mlflow-client", "mountPath": f"{SECRETS_MOUNT}/mlflow-client",
                          "optional": True}, executor  # read by crnn/credentials.py; a missing key is no file
        assert k8s[executor]["fieldPathAsEnv"] == [{"name": RUN_ID_ENV, "fieldPath": RUN_ID_FIELD}], executor
    assert {s["secretName"] for s in k8s["exec-download"]["secretAsVolume"]} == {"crnn-s3"}
    # Every task that reads or writes data mounts the datasets volume at the pipeline's default data_root.
    readers = {"exec-download", "exec-convert", "exec-plan-slices", "exec-convert-slice", "exec-merge-slices",
               "exec-log-data-steps", "exec-train", "exec-evaluate", "exec-register"}
    for executor in readers:
        assert k8s[executor]["pvcMount"] == [{"constant": "crnn-datasets", "mountPath": DATASETS_MOUNT}], executor
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"] == DATASETS_MOUNT

    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert tasks["download"]["retryPolicy"]["maxRetryCount"] == 3
    assert tasks["download"]["cachingOptions"]["enableCache"] is True
    assert tasks["convert"]["cachingOptions"]["enableCache"] is True
    assert tasks["merge-slices"]["cachingOptions"]["enableCache"] is True
    # A cache key is made of the inputs: a cached task must take nothing that differs between runs.
    for name in ("download", "convert", "plan-slices", "merge-slices"):
        assert "{{$.pipeline_job_uuid}}" not in str(tasks[name]["inputs"]), name
    assert "{{$.pipeline_job_uuid}}" in str(tasks["log-data-steps"]["inputs"])
    assert tasks["log-data-steps"]["cachingOptions"] == {}
    assert tasks["train"]["cachingOptions"] == {}  # caching off: it must log under this run
    finish = spec["root"]["dag"]["tasks"]["finish-run"]
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert finish["dependentTasks"] == ["exit-handler-1"]
    assert "status" not in finish["inputs"]["parameters"]  # no PipelineTaskFinalStatus: refused before KFP 2.14


def test_several_nodes_train_as_a_job_the_task_only_watches(compiled):
    spec, platform = compiled["gpu-2-nodes.yaml"]
    executors = _executors(spec)
    assert "exec-train-job" in executors and "exec-train" not in executors
    assert "accelerator" not in executors["exec-train-job"]["container"].get("resources", {})
    assert _platform(platform)["exec-train-job"]["pvcMount"][0]["constant"] == "crnn-datasets"
    job = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train-job"]["inputs"]["parameters"]
    assert job["workers"]["runtimeValue"]["constant"] == 2
    assert job["image"]["runtimeValue"]["constant"] == "crnn-pipeline/gpu:0.1.0"


def test_registry_and_tag_set_every_image(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--target", "ascend", "--registry", "r.example/ocr", "--tag", "1.2",
                 "--out", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert {e["container"]["image"] for e in _executors(spec).values()} == {"r.example/ocr/cpu:1.2"}
    job = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]["train-job"]["inputs"]["parameters"]
    assert job["image"]["runtimeValue"]["constant"] == "r.example/ocr/ascend:1.2"  # the AscendJob's pods


def test_impossible_targets_are_refused(tmp_path):
    from pipelines.crnn_pipeline import make_pipeline

    with pytest.raises(ValueError, match="needs a cluster target"):
        make_pipeline(nodes=2)  # kfp.local's


def test_the_gate_thresholds_agree_everywhere(compiled):
    """The pipeline, the register component and ``crnn register`` gate alike unless told otherwise. (A
    component's defaults must be literals: its source runs alone in the container.)"""
    from crnn.cli import _parser
    from crnn.registry.gate import DEFAULT_MAX_DROP_POINTS, DEFAULT_MIN_AVERAGE

    spec = compiled["cpu.yaml"][0]
    component = spec["components"]["comp-register"]["inputDefinitions"]["parameters"]
    pipeline = spec["root"]["inputDefinitions"]["parameters"]
    register = _parser().parse_args(["register", "--model", "m", "--report", "r"])
    expected = (DEFAULT_MIN_AVERAGE, DEFAULT_MAX_DROP_POINTS)
    assert (component["min_average"]["defaultValue"], component["max_drop_points"]["defaultValue"]) == expected
    assert (pipeline["min_average"]["defaultValue"], pipeline["max_drop_points"]["defaultValue"]) == expected
    assert (register.min_average, register.max_drop_points) == expected
