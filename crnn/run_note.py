"""Runs' descriptions in the MLflow UI: what a reviewer reads first on a run's page.

MLflow renders a run's ``mlflow.note.content`` tag as Markdown on the run page, so the parent run of a
pipeline reads as its summary (the per-benchmark accuracy with its data's source, the gate and its reasons,
the step runs in order), the train run says what was trained and which model it logged, and an evaluate run
what it scored and on which data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crnn.run_views import steps_link

NOTE_TAG = "mlflow.note.content"
SYNTHETIC_TAG_PREFIX = "crnn.synthetic/"  # a benchmark whose data was rendered, not the real dataset's
MANIFEST_TAG_PREFIX = "crnn.manifest_sha256/"  # the converted benchmark split a score was taken on
DATASET_DIGEST_LENGTH = 16  # of a manifest's sha256, as the descriptions and MLflow's Datasets panel show it


def run_link(experiment_id: str, run_id: str, text: str) -> str:
    """A link the MLflow UI follows within its own page."""
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})"


def data_source(synthetic: bool, manifest_sha256: str) -> str:
    """Where a benchmark's data came from, as every score's page says it: rendered or the dataset itself, and
    the converted split's manifest digest (as the Datasets panel shows it)."""
    return f"{'synthetic' if synthetic else 'dataset'}, manifest {manifest_sha256[:DATASET_DIGEST_LENGTH]}"


def benchmark_table(entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown rows of benchmarks (report entries: ``accuracy``, ``synthetic``, ``manifest_sha256``), each
    named as it is shown everywhere and with the source of its data."""
    lines = ["| benchmark | word accuracy % | data |", "|---|---:|---|"]
    for name, entry in sorted(entries.items()):
        label = f"{name} (synthetic)" if entry.get("synthetic") else name
        digest = entry.get("manifest_sha256")
        source = data_source(bool(entry.get("synthetic")), digest) if digest else ""
        lines.append(f"| {label} | {100 * entry['accuracy']:.2f} | {source} |")
    return lines


def model_link(experiment_id: str, model_id: str | None, missing: str) -> str:
    """The logged model's page, or ``missing`` (why there is none)."""
    return f"[{model_id}](#/experiments/{experiment_id}/models/{model_id})" if model_id else missing


def training_note(preset: str, steps: int, replicas: int, device: str, final_loss: float,
                  val_accuracy: float | None, model: str) -> str:
    """The train run's description; ``model`` is :func:`model_link`'s."""
    validation = "no validation set" if val_accuracy is None else f"validation accuracy {100 * val_accuracy:.2f} %"
    return (f"Trained the `{preset}` preset for {steps} steps on {replicas} {device} replica(s): final loss "
            f"{final_loss:.4f}, {validation}.\n\nLogged model: {model}\n")


def evaluation_note(entries: Mapping[str, Mapping[str, Any]], model: str) -> str:
    """An evaluate run's description: each benchmark's score and data source, and the model it scored."""
    return "\n".join([*benchmark_table(entries), "", f"Scored model: {model}"]) + "\n"


def pipeline_note(parent: Any, children: Sequence[Any]) -> str:
    """Markdown for ``parent`` (an MLflow Run) and its step runs, in the order they started."""
    metrics, tags = parent.data.metrics, parent.data.tags
    lines = [f"## Pipeline run {parent.info.run_name}", ""]
    accuracy = {k.removeprefix("accuracy/"): v for k, v in metrics.items() if k.startswith("accuracy/")}
    if accuracy:
        averages = ("average", "weighted_average")
        lines += benchmark_table({name: {"accuracy": value, "manifest_sha256": tags.get(MANIFEST_TAG_PREFIX + name, ""),
                                         "synthetic": tags.get(SYNTHETIC_TAG_PREFIX + name) == "true"}
                                  for name, value in accuracy.items() if name not in averages})
        for name in averages:
            if name in accuracy:
                lines.append(f"| **{name.replace('_', ' ')}** | **{100 * accuracy[name]:.2f}** | |")
        lines.append("")
    if "gate.decision" in tags:
        name, version = tags.get("crnn.model_name", "model"), tags.get("crnn.model_version", "?")
        model = f"[{name} version {version}](#/models/{name}/versions/{version})"  # the registry's own page
        lines.append(f"**Gate: {tags['gate.decision']}** ({model})")
        lines += [f"- {key.removeprefix('gate.')}: {value}" for key, value in sorted(tags.items())
                  if key.startswith("gate.") and key not in ("gate.decision", "gate.champion_version")]
        lines.append("")
    if "pipeline_time_s" in metrics:
        lines += [f"Pipeline time: {metrics['pipeline_time_s']:.0f} s", ""]
    in_table = steps_link(parent.info.experiment_id, parent.info.run_id)
    lines += [f"Steps, in the order they ran ([in the runs table]({in_table})):", "",
              "| step | status | time s |", "|---|---|---:|"]
    for child in sorted(children, key=lambda run: run.info.start_time or 0):
        seconds = child.data.metrics.get("step_time_s")
        lines.append(f"| {run_link(child.info.experiment_id, child.info.run_id, child.info.run_name)} | "
                     f"{child.info.status} | {'' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines) + "\n"
