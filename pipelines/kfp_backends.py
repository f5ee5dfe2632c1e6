"""The KFP backends the compiled pipelines run on, and what each of them accepts.

Written from kubeflow/pipelines' own source at each release tag (the Argo compiler
``backend/src/v2/compiler/argocompiler``, the driver ``backend/src/v2/driver``, ``go.mod``); the file and tag
behind each fact is named beside it. ``features_used`` reads a compiled pipeline for the features that some
backends lack, ``refusals`` says which of them a backend would refuse, and ``for_every_backend`` rewrites the
Kubernetes platform spec into the form the oldest supported driver parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backend:
    version: str  # the backend's release tag in kubeflow/pipelines
    kubeflow: str  # the Kubeflow release that ships it (kubeflow/manifests: the api-server image at that tag)
    # The PyPI kfp-kubernetes release whose kubernetes_executor_config.proto this backend parses (go.mod's
    # kubernetes_platform commit; from 2.5.0 a replace to the tree's own kubernetes_platform/).
    kfp_kubernetes: str
    # The PyPI kfp-pipeline-spec release whose pipeline_spec.proto its API server parses the pipeline with
    # (go.mod's api commit, or from 2.5.0 the tree's own api/), strictly: template.go isPipelineSpec.
    kfp_pipeline_spec: str
    strict_platform_spec: bool  # an unknown field of the platform spec is an error (driver or compiler)
    final_status: bool  # an exit task may take dsl.PipelineTaskFinalStatus
    collected: bool  # dsl.Collected: fan-in of a ParallelFor's outputs
    job_placeholders: bool  # {{$.pipeline_job_uuid}} and the other job placeholders resolved
    loop_dependency: bool  # a task may depend on a whole ParallelFor (.after(task in the loop))
    retry: str  # "no", "root" (tasks directly in the root DAG only) or "all"
    parallelism: bool  # ParallelFor(parallelism=N) honoured (else every iteration at once)
    loop_artifacts_distinct: bool  # each iteration's output artifacts kept apart (else they overwrite)


BACKENDS = (
    # Strict platform parse: driver cmd/driver/main.go jsonpb.UnmarshalString @ 2.2.0-2.4.0; kfp-kubernetes 1.2.0
    # differs from the commit go.mod pins (8b2a099e) only in the int width of two affinity weights.
    # Final status refused: argocompiler/dag.go:483 "task final status not supported yet" @ 2.2.0.
    # Collected: no DAG outputs read @ 2.2.0 (driver.go); loop iterations' artifacts share one URI (#10186).
    # Retry: no RetryPolicy in compiler or driver @ 2.2.0; parallelism: never read @ 2.2.0 (dag.go).
    Backend("2.2.0", "1.9.0", "1.2.0", "0.2.2", True, False, False, False, True, "no", False, False),
    Backend("2.3.0", "1.9.1", "1.4.0", "0.2.2", True, False, False, False, True, "no", False, False),
    # 2.4.0 is left out: its compiler renamed the loop task to <name>-loop, which broke .after(loop), and
    # artifact passing inside an iteration (kubeflow/pipelines#11520); fixed in 2.4.1 (f7c0616db7).
    # Lenient platform parse: util.UnmarshalString AllowUnknownFields @ 2.4.1 (9afe23e748, #11662).
    # Retry: retryStrategy for root-DAG tasks only, argocompiler/container.go:461 @ 2.4.1 (30210e33bf).
    # Parallelism: argocompiler/dag.go:359 @ 2.4.0 (b7d8c97d65); output URIs get a random part (219725d9f0).
    Backend("2.4.1", "1.10.0", "1.4.0", "0.5.0", False, False, False, False, True, "root", True, True),
    # Job placeholders: driver.go:1644 @ 2.5.0 (6a13f4bad0, #11599). Collected still skipped: driver.go:1768.
    # Its api/ proto lies between kfp-pipeline-spec 0.6.0 and 0.7.0: 0.6.0 lacks three PipelineConfig fields
    # the backend knows (semaphore_key, mutex_name, resource_ttl), so parsing with it is, if anything, stricter.
    Backend("2.5.0", "1.10.1", "1.5.0", "0.6.0", False, False, False, True, True, "root", True, True),
    # Strict platform parse again, in the API server's compiler: argocompiler/container.go:306 @ 2.15.0
    # (protojson.Unmarshal, a870b1a325 #12049). Final status: resolve.go:438 (0d857b6f8a #11953); Collected:
    # resolve.go CollectInputs (ed828b513a #11725); retry at any depth: container.go (9245739f6f #11861).
    Backend("2.15.0", "1.11.0", "2.15.0", "2.15.0", True, True, True, True, True, "all", True, True),
    Backend("2.16.0", "26.03", "2.16.0", "2.16.0", True, True, True, True, True, "all", True, True),
    Backend("2.17.0", "standalone", "2.17.0", "2.17.3", True, True, True, True, True, "all", True, True),
)

# What the SDK writes for dsl.PIPELINE_JOB_ID_PLACEHOLDER and its kind (kfp/dsl/__init__.py @ sdk-2.17.0).
_JOB_PLACEHOLDER = re.compile(r"^\{\{\$\.pipeline_(job|task)_[a-z_]+\}\}$")


def backend(version: str) -> Backend:
    for known in BACKENDS:
        if known.version == version:
            return known
    raise ValueError(f"unknown KFP backend {version!r}; supported: {', '.join(b.version for b in BACKENDS)}")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _tasks(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(component or root, task name, task spec) of every DAG task."""
    for name, component in [("root", spec["root"]), *spec.get("components", {}).items()]:
        for task_name, task in component.get("dag", {}).get("tasks", {}).items():
            yield name, task_name, task


def _loops(spec: dict) -> set[str]:
    return {name for _, name, task in _tasks(spec) if "parameterIterator" in task or "artifactIterator" in task}


def features_used(spec: dict) -> dict[str, list[str]]:
    """The features of a compiled pipeline spec that some backends lack, each with where it is used."""
    loops = _loops(spec)
    used: dict[str, list[str]] = {}
    for component, name, task in _tasks(spec):
        where = f"{component}/{name}"
        inputs = task.get("inputs", {})
        for key, value in _walk(inputs):
            if key == "taskFinalStatus":
                used.setdefault("final_status", []).append(where)
            if key in ("taskOutputParameter", "taskOutputArtifact") and value.get("producerTask") in loops:
                used.setdefault("collected", []).append(where)
        if _given_placeholder(task):
            used.setdefault("job_placeholders", []).append(where)
        if loops & set(task.get("dependentTasks", [])):
            used.setdefault("loop_dependency", []).append(where)
        if "retryPolicy" in task:
            used.setdefault("retry", []).append(where)
        if task.get("iteratorPolicy", {}).get("parallelismLimit"):
            used.setdefault("parallelism", []).append(where)
    return used


def _given_placeholder(task: dict) -> bool:
    return any(key == "constant" and isinstance(value, str) and _JOB_PLACEHOLDER.match(value)
               for key, value in _walk(task.get("inputs", {})))


def _platform_executors(platform: dict) -> dict:
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def refusals(spec: dict, platform: dict, target: Backend) -> list[str]:
    """Why ``target`` would not run the compiled pipeline (spec, platform spec) as meant; empty if it would.

    The job placeholders may go unresolved where every task given one also gets the run's id from its pod
    (crnn/job_id.py); a retry or a parallelism limit a backend ignores costs robustness or pace, not the run,
    and is not a refusal (the README's table lists them)."""
    from crnn.job_id import RUN_ID_ENV

    used = features_used(spec)
    found = [f"{feature} at {', '.join(used[feature])}" for feature in ("final_status", "collected", "loop_dependency")
             if feature in used and not getattr(target, feature)]
    if not target.job_placeholders:
        executors = _platform_executors(platform)
        for component, name, task in _tasks(spec):
            executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
            envs = {env["name"] for env in executors.get(executor, {}).get("fieldPathAsEnv", [])}
            if _given_placeholder(task) and RUN_ID_ENV not in envs:
                found.append(f"job_placeholders at {component}/{name}, whose pod does not get {RUN_ID_ENV}")
    return found


def for_every_backend(platform: dict) -> dict:
    """The platform spec with the fields kfp-kubernetes 1.5 added beside older ones removed where they say the
    same: ``secretNameParameter`` beside ``secretName``, ``pvcNameParameter`` beside ``constant``. Drivers
    up to 2.4.0 refuse them (they parse strictly with the older proto); later ones read either
    (driver/k8s.go @ 2.17.0 falls back to the constant)."""
    for config in _platform_executors(platform).values():
        for entry in config.get("secretAsVolume", []) + config.get("secretAsEnv", []):
            _drop_parameter(entry, "secretNameParameter", entry.get("secretName"))
        for entry in config.get("pvcMount", []):
            _drop_parameter(entry, "pvcNameParameter", entry.get("constant"))
    return platform


def _drop_parameter(entry: dict, key: str, constant: str | None) -> None:
    parameter = entry.get(key)
    if parameter is not None and constant and parameter == {"runtimeValue": {"constant": constant}}:
        del entry[key]
