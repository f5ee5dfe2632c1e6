"""Registers the trained model (``crnn.registry.logged_model``) as a new version of ``crnn`` with the alias
``candidate``, and moves ``champion`` to it when it passes the gate (``crnn.registry.gate``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crnn.lineage import read_lineage
from crnn.registry.gate import (
    ACCURACY_TAG_PREFIX,
    DATA_TAG_PREFIX,
    Decision,
    GateRule,
    champion_accuracies,
    champion_data_digests,
    decide,
)
from crnn.registry.lock import registry_lock
from crnn.run_note import benchmark_table
from crnn.tracking import StepRun

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "crnn"
CANDIDATE, CHAMPION = "candidate", "champion"
# On a version: the KFP job that registered it (on runs the job id is tracking.PIPELINE_RUN_TAG).
VERSION_PIPELINE_RUN_TAG = "pipeline_run_id"


def register_model(export_dir: Path, report: Mapping[str, Any], run: StepRun,
                   name: str = DEFAULT_MODEL_NAME, tags: Mapping[str, str] | None = None) -> str:
    """Registers the model ``export_dir`` was logged as (logging it in ``run`` first when it was not) under
    ``name``; returns the new version number.

    The version carries its lineage (:func:`lineage_tags`) and ``tags``.
    """
    if not run.enabled:
        raise ValueError("registering a model needs MLflow: set --tracking-uri or MLFLOW_TRACKING_URI")
    import mlflow
    from mlflow.tracking import MlflowClient

    version_tags = lineage_tags(export_dir, report) | dict(tags or {})
    existing = _registered_by(MlflowClient(run.tracking_uri), name, version_tags.get(VERSION_PIPELINE_RUN_TAG))
    if existing is not None:  # a retried register task of the same pipeline run: one version per run
        log.info("%s version %s is already registered by pipeline run %s", name, existing,
                 version_tags[VERSION_PIPELINE_RUN_TAG])
        return existing
    from crnn.registry.logged_model import log_model, logged_model_id

    # The model the train run logged; else (logged elsewhere, or by an MLflow 2 client) this run logs it.
    model_id = logged_model_id(export_dir, run.tracking_uri) or log_model(export_dir, run)
    mlflow.set_tracking_uri(run.tracking_uri)  # where register_model looks the model up and registers it
    # The tags go in with the version, so no version exists without its lineage (or its pipeline run).
    version = mlflow.register_model(f"models:/{model_id}", name, tags=version_tags).version
    log.info("registered %s version %s (average accuracy %.4f)", name, version, report["average"])
    return str(version)


def _registered_by(client, name: str, pipeline_run_id: str | None) -> str | None:
    """The version that pipeline run ``pipeline_run_id`` registered already, if any."""
    if not pipeline_run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.{VERSION_PIPELINE_RUN_TAG} = '{pipeline_run_id}'")
    except MlflowException:  # no such model yet
        return None
    return str(found[0].version) if found else None


def lineage_tags(export_dir: Path, report: Mapping[str, Any]) -> dict[str, str]:
    """What a version records of its origin: the code's commit and training data (``crnn.lineage``), each
    benchmark's accuracy and data checksum, the average."""
    tags = read_lineage(export_dir)
    tags.setdefault("git_commit", "unknown")
    for bench, entry in report["benchmarks"].items():
        tags[f"{ACCURACY_TAG_PREFIX}{bench}"] = f"{entry['accuracy']:.4f}"
        if "manifest_sha256" in entry:
            tags[f"data.manifest_sha256/{bench}"] = entry["manifest_sha256"]
        if "data_sha256" in entry:
            tags[f"{DATA_TAG_PREFIX}{bench}"] = entry["data_sha256"]
        if entry.get("synthetic"):
            tags[f"data.synthetic/{bench}"] = "true"
    tags[f"{ACCURACY_TAG_PREFIX}average"] = f"{report['average']:.4f}"
    return tags


def gate_and_alias(name: str, version: str, report: Mapping[str, Any], rule: GateRule, run: StepRun) -> Decision:
    """Sets ``candidate`` on ``version``, decides against the current champion and moves ``champion`` when the
    candidate passes; the decision and its reasons go on the version and the run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(run.tracking_uri)
    with registry_lock(client, name) as held:  # one decision at a time: the champion read is the one replaced
        client.set_registered_model_alias(name, CANDIDATE, version)
        try:
            champion = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:  # no champion yet: the minimum alone decides
            champion = None
        decision = decide(report, rule, champion_accuracies(champion.tags) if champion else None,
                          champion.version if champion else None,
                          champion_data_digests(champion.tags) if champion else None)
        if decision.promote:
            held.check()  # a holder silent long enough to lose its lock must not move the alias after all
            client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, version, key, value)
    # The verdict first, in plain words: the registry's model list shows a description's first line only.
    verdict = decision.format_table().strip().splitlines()[-1].removeprefix("decision: ")
    # Then the scores with the source of their data: a synthetic stand-in wears a real benchmark's name.
    scores = "\n".join(benchmark_table(report["benchmarks"]))
    client.update_model_version(name, version, description=f"Gate: {verdict}\n\n```\n{decision.format_table()}```\n\n"
                                                           f"{scores}\n")
    run.set_tags(decision.as_tags())
    run.log_metrics(decision.as_metrics())
    log.info("gate for %s version %s:\n%s", name, version, decision.format_table())
    return decision
