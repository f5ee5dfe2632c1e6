"""``crnn pipeline submit``: upload the compiled pipeline to a KFP cluster (a new version if it exists) and start
a run through ``kfp.Client``, optionally waiting for it."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (numbers, lists, true) is passed as that, else as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def submit(args: argparse.Namespace) -> dict[str, Any]:
    """Uploads (or versions) the pipeline, starts a run, waits if asked; prints and returns what it did."""
    import kfp

    from pipelines.crnn_pipeline import PIPELINE_NAME, compile_pipeline
    from pipelines.kfp_login import login

    params = parse_params(args.param)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    client = kfp.Client(host=args.host, namespace=args.namespace,
                        **login(args.token, args.token_command, args.token_file))
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or compile_pipeline(Path(tmp) / "pipeline.yaml", args.target, args.nodes,
                                                   args.registry, args.tag)
        if args.no_cache:
            package = without_cache(Path(package), Path(tmp) / "uncached.yaml")
        pipeline_id, version_id = _upload(client, str(package), PIPELINE_NAME,
                                          args.version_name or f"{args.target}-{stamp}", args.namespace)
    experiment = client.create_experiment(args.experiment, namespace=args.namespace)
    run = client.run_pipeline(experiment.experiment_id, args.run_name or f"crnn-{args.target}-{stamp}",
                              params=params, pipeline_id=pipeline_id, version_id=version_id,
                              service_account=args.service_account)
    result = {"pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": experiment.experiment_id,
              "run_id": run.run_id, "state": run.state}
    print(f"submitted run {run.run_id} (pipeline {pipeline_id}, version {version_id})", flush=True)
    if args.wait:
        finished = client.wait_for_run_completion(run.run_id, timeout=args.wait, sleep_duration=5)
        result["state"] = finished.state
        print(f"run {run.run_id}: {finished.state}")
        if str(finished.state).upper() != "SUCCEEDED":
            raise RuntimeError(f"run {run.run_id} ended {finished.state}")
    return result


def without_cache(package: Path, dest: Path) -> Path:
    """A copy of the compiled ``package`` with caching off for every task: the kfp client's own override
    (``enable_caching``) applies only to runs of a package, not to runs of an uploaded pipeline version."""
    import yaml

    documents = list(yaml.safe_load_all(package.read_text()))
    spec = documents[0]
    for component in [spec["root"], *spec["components"].values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            task["cachingOptions"] = {}
    dest.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return dest


def _upload(client: Any, package: str, name: str, version_name: str, namespace: str | None) -> tuple[str, str]:
    """(pipeline id, version id): a new version of the pipeline found in ``namespace`` or else shared; the
    pipeline uploaded (into ``namespace``, when given) the first time."""
    pipeline_id = _find_pipeline(client, name, namespace)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=name, namespace=namespace)
        pipeline_id = pipeline.pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, page_size=1).pipeline_versions or []
        return pipeline_id, versions[0].pipeline_version_id
    version = client.upload_pipeline_version(package, version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def _find_pipeline(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline ``name`` in ``namespace`` (a user's own, in multi-user mode), else of the shared
    one. The kfp client's ``get_pipeline_id`` looks at shared pipelines only."""
    wanted = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    for scope in ([namespace] if namespace else []) + [None]:
        found = client.list_pipelines(filter=wanted, namespace=scope, page_size=2).pipelines or []
        if len(found) > 1:
            raise ValueError(f"several pipelines are named {name!r} in {scope or 'the shared pipelines'}")
        if found:
            return found[0].pipeline_id
    return None
