"""The pipeline run's description in the MLflow UI: results, the gate's verdict and links to each step's run.

MLflow renders a run's ``mlflow.note.content`` tag as Markdown on the run page, so the parent run of a
pipeline reads as its summary: the per-benchmark accuracy, the gate and its reasons, and the step runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NOTE_TAG = "mlflow.note.content"
SYNTHETIC_TAG_PREFIX = "crnn.synthetic/"  # a benchmark whose data was rendered, not the real dataset's


def run_link(experiment_id: str, run_id: str, text: str) -> str:
    """A link the MLflow UI follows within its own page."""
    return f"[{text}](#/experiments/{experiment_id}/runs/{run_id})"


def pipeline_note(parent: Any, children: Sequence[Any]) -> str:
    """Markdown for ``parent`` (an MLflow Run) and its step runs, in the order they started."""
    metrics, tags = parent.data.metrics, parent.data.tags
    lines = [f"## Pipeline run {parent.info.run_name}", ""]
    accuracy = {k.removeprefix("accuracy/"): v for k, v in metrics.items() if k.startswith("accuracy/")}
    if accuracy:
        lines += ["| benchmark | word accuracy % |", "|---|---:|"]
        lines += [f"| {_label(name, tags)} | {100 * value:.2f} |" for name, value in sorted(accuracy.items())
                  if name not in ("average", "weighted_average")]
        for name in ("average", "weighted_average"):
            if name in accuracy:
                lines.append(f"| **{name.replace('_', ' ')}** | **{100 * accuracy[name]:.2f}** |")
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
    lines += ["| step | status | time s |", "|---|---|---:|"]
    for child in sorted(children, key=lambda run: run.info.start_time or 0):
        seconds = child.data.metrics.get("step_time_s")
        lines.append(f"| {run_link(child.info.experiment_id, child.info.run_id, child.info.run_name)} | "
                     f"{child.info.status} | {'' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines) + "\n"


def _label(benchmark: str, tags: dict) -> str:
    """A benchmark's name as the description shows it: a synthetic stand-in says so."""
    return f"{benchmark} (synthetic)" if tags.get(f"{SYNTHETIC_TAG_PREFIX}{benchmark}") == "true" else benchmark
