"""The committed pipelines against every supported KFP backend: the feature table of pipelines/kfp_backends.py,
and a strict parse of the pipeline spec and of every task's Kubernetes platform spec with the protos that
backend parses them with (the kfp-pipeline-spec and kfp-kubernetes releases it matches, fetched from PyPI
into pytest's cache, never into the project's environment)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from pipelines.kfp_backends import BACKENDS, Backend, backend, features_used, for_every_backend, refusals

COMPILED = Path(__file__).parent.parent / "pipelines" / "compiled"
PIPELINES = sorted(COMPILED.glob("*.yaml"))


def _documents(path: Path) -> tuple[dict, dict]:
    spec, *platform = yaml.safe_load_all(path.read_text())
    return spec, (platform[0] if platform else {})


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_committed_pipeline_runs_on_every_supported_backend(path):
    spec, platform = _documents(path)
    assert {b.version: refusals(spec, platform, b) for b in BACKENDS} == {b.version: [] for b in BACKENDS}
    used = features_used(spec)
    assert "final_status" not in used and "collected" not in used
    assert "job_placeholders" in used  # resolved from 2.5.0; before, the pods' run-id variable stands in


def test_the_table_refuses_what_older_backends_refuse(tmp_path):
    """A pipeline with an exit task taking the final status, a fan-in of a loop's outputs and a job id with no
    run-id variable: refused by the backends whose source lacks them, run by 2.15 and 2.17."""

    @dsl.component(base_image="python:3.11")
    def item(x: str) -> str:
        return x

    @dsl.component(base_image="python:3.11")
    def gather(xs: list, job: str):
        print(xs, job)

    @dsl.component(base_image="python:3.11")
    def final(status: dsl.PipelineTaskFinalStatus):
        print(status.state)

    @dsl.pipeline
    def old_shape(xs: list = ["a"]):  # noqa: B006 - the pipeline parameter's default
        with dsl.ExitHandler(final()):
            with dsl.ParallelFor(xs) as x:
                one = item(x=x)
            gather(xs=dsl.Collected(one.output), job=dsl.PIPELINE_JOB_ID_PLACEHOLDER)

    compiler.Compiler().compile(old_shape, str(tmp_path / "old.yaml"))
    spec, platform = _documents(tmp_path / "old.yaml")
    refused = {b.version: " ".join(refusals(spec, platform, b)) for b in BACKENDS}
    for version in ("2.2.0", "2.3.0", "2.4.1"):
        assert all(word in refused[version] for word in ("final_status", "collected", "job_placeholders")), version
    assert "job_placeholders" not in refused["2.5.0"] and "final_status" in refused["2.5.0"]
    assert refused["2.15.0"] == refused["2.17.0"] == ""


def test_redundant_parameter_forms_are_dropped_and_others_kept():
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-a": {
        "pvcMount": [{"constant": "data", "mountPath": "/d",
                      "pvcNameParameter": {"runtimeValue": {"constant": "data"}}},
                     {"mountPath": "/e", "pvcNameParameter": {"componentInputParameter": "pvc"}}],
        "secretAsVolume": [{"secretName": "s", "mountPath": "/s", "optional": True,
                            "secretNameParameter": {"runtimeValue": {"constant": "s"}}}]}}}}}}
    config = for_every_backend(platform)["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-a"]
    assert config["pvcMount"] == [{"constant": "data", "mountPath": "/d"},
                                  {"mountPath": "/e", "pvcNameParameter": {"componentInputParameter": "pvc"}}]
    assert config["secretAsVolume"] == [{"secretName": "s", "mountPath": "/s", "optional": True}]


def test_unknown_backends_are_named():
    with pytest.raises(ValueError, match="supported: 2.2.0"):
        backend("2.4.0")


# Runs with only the throwaway environment on its path (python -S: no site-packages), so that neither the
# project's kfp nor its protobuf is imported.
_PARSE = """
import json, sys
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as kubernetes
from kfp.pipeline_spec import pipeline_spec_pb2 as pipeline_spec

problems = []
for name, (spec, executors) in json.load(open(sys.argv[1])).items():
    for what, document, message in [("pipeline spec", spec, pipeline_spec.PipelineSpec)] + [
            (executor, config, kubernetes.KubernetesExecutorConfig) for executor, config in executors.items()]:
        try:
            json_format.ParseDict(document, message(), ignore_unknown_fields=False)
        except json_format.ParseError as error:
            problems.append(f"{name} {what}: {error}")
print(json.dumps(problems))
"""


def _environment(request: pytest.FixtureRequest, target: Backend) -> Path:
    """A folder holding the backend's kfp-pipeline-spec release with the protobuf it requires (pip, from the
    package index) and its kfp-kubernetes release's generated proto module; made once, in pytest's cache."""
    cache = request.config.cache.mkdir("kfp-protos")
    env = cache / f"backend-{target.version}"
    if env.is_dir():
        return env
    tmp = cache / f".backend-{target.version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # googleapis-common-protos: pipeline_spec_pb2 imports google.rpc.status_pb2 without declaring it (kfp does).
    _pip("install", "--no-warn-conflicts", "--target", str(tmp), f"kfp-pipeline-spec=={target.kfp_pipeline_spec}",
         "googleapis-common-protos")
    _pip("download", "--no-deps", "--dest", str(tmp / "download"), f"kfp-kubernetes=={target.kfp_kubernetes}")
    [archive] = list((tmp / "download").iterdir())
    member = "kfp/kubernetes/kubernetes_executor_config_pb2.py"
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(member)
    else:  # the 1.x releases of kfp-kubernetes are source distributions only
        with tarfile.open(archive) as sdist:
            [info] = [m for m in sdist.getmembers() if m.name.endswith(member)]
            data = sdist.extractfile(info).read()
    (tmp / "kfp" / "kubernetes").mkdir(parents=True)
    (tmp / member).write_bytes(data)
    shutil.rmtree(tmp / "download")
    try:
        tmp.rename(env)
    except OSError:  # another pytest worker made it meanwhile
        shutil.rmtree(tmp)
    return env


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"], check=True,
                   timeout=300)


def _parse_strictly(env: Path, documents: dict, tmp_path: Path) -> list[str]:
    (tmp_path / "documents.json").write_text(json.dumps(documents))
    parsed = subprocess.run([sys.executable, "-S", "-c", _PARSE, str(tmp_path / "documents.json")],
                            capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(env)})
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    return json.loads(parsed.stdout)


@pytest.mark.parametrize("target", BACKENDS, ids=lambda b: b.version)
def test_every_document_parses_strictly_with_the_backends_protos(target, request, tmp_path):
    documents = {}
    for path in PIPELINES:
        spec, platform = _documents(path)
        documents[path.name] = (spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
    assert _parse_strictly(_environment(request, target), documents, tmp_path) == []


def test_the_strict_parse_catches_a_field_an_old_proto_lacks(request, tmp_path):
    """The check above can fail: kfp-kubernetes 2.17's own forms, before for_every_backend, are refused by the
    proto of backend 2.2.0."""
    spec, _ = _documents(PIPELINES[0])
    executors = {"exec-x": {"pvcMount": [{"constant": "d", "mountPath": "/d",
                                          "pvcNameParameter": {"runtimeValue": {"constant": "d"}}}]}}
    [problem] = _parse_strictly(_environment(request, backend("2.2.0")), {"new-forms": (spec, executors)}, tmp_path)
    assert "pvcNameParameter" in problem
