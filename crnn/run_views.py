"""Views of the runs table that a reviewer opens from a link, in the MLflow UI's own terms.

The experiment's saved view ``PIPELINE_RUNS_VIEW`` lists the pipeline runs alone, newest first, with their
pipeline time, accuracies and step times as columns: the MLflow UI (3.x) applies the state stored in the
experiment tag ``mlflow.sharedViewState.<key>`` when its runs page is opened with ``?viewStateShareKey=<key>``
(no other URL facet beside it), as it does for the views a user saves. Its columns are the metrics of the
latest pipeline runs, so the view is rewritten as each pipeline run ends. The steps of one pipeline run, in
the order they ran, are a filter and a sort in the URL (``steps_link``).

What the UI reads was taken from MLflow 3.17.2's bundled UI (``mlflow/server/js/build``): the saved view's
envelope (``name``, ``createdAt``, ``state``: the state as JSON text), the column keys (``metrics.`<key>```,
``attributes.`Version``` for the commit, ``duration``) and the runs page's URL facets (``searchFilter``,
``orderByKey``, ``orderByAsc``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# On every step run, when the step started (UTC, ISO 8601 to the millisecond): sorted by it, the runs table lists
# the steps flat, in the order they ran; sorted by creation time it nests them, collapsed, under the pipeline's run.
STARTED_AT_TAG = "crnn.started_at"
PIPELINE_RUNS_VIEW = "crnn-pipeline-runs"
PIPELINE_RUNS_FILTER = "tags.`crnn.step` = 'pipeline'"  # the pipeline runs, not their steps
_COMMIT_COLUMN = "attributes.`Version`"  # the code's commit (mlflow.source.git.commit)
VIEW_RUNS = 20  # the latest pipeline runs whose metrics make the view's columns


def pipeline_runs_link(experiment_id: str) -> str:
    """The runs page with the saved view of pipeline runs (a fragment: the UI's base URL goes before it)."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={PIPELINE_RUNS_VIEW}"


def steps_link(experiment_id: str, parent_run_id: str) -> str:
    """The runs page listing one pipeline run's steps in the order they started, each with its duration."""
    facets = {"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
              "orderByKey": f"tags.`{STARTED_AT_TAG}`", "orderByAsc": "true"}
    return f"#/experiments/{experiment_id}/runs?{urlencode(facets, quote_via=quote)}"


def metric_order(keys: Iterable[str], steps: Sequence[str] = ()) -> list[str]:
    """The columns pipeline runs' metrics make, in reading order: pipeline time, average accuracy, each
    benchmark's, then the step times in the order of ``steps`` (the steps as they ran), then those of steps
    other runs had."""
    keys = set(keys)
    accuracies = sorted(k for k in keys if k.startswith("accuracy/") and not k.endswith("average"))
    step_times = [f"step_time_s/{step}" for step in steps]
    step_times += sorted(k for k in keys if k.startswith("step_time_s/") and k not in step_times)
    ordered = ["pipeline_time_s", "accuracy/average", *accuracies, "accuracy/weighted_average", *step_times]
    return [key for key in ordered if key in keys]


def pipeline_runs_view(metric_keys: Sequence[str]) -> str:
    """The saved view's tag value, with ``metric_keys`` as columns in that order."""
    widths = {f"metrics.`{key}`": _width(key) for key in metric_keys}
    columns = list(widths)
    state = {"searchFilter": PIPELINE_RUNS_FILTER, "orderByKey": "attributes.start_time", "orderByAsc": False,
             "selectedColumns": [_COMMIT_COLUMN, *columns], "runsHiddenMode": "SHOW_ALL",
             # The order lists Duration, which is always shown: an order without it hides it.
             "columnOrder": ["duration", _COMMIT_COLUMN, *columns], "columnWidths": widths}
    return json.dumps({"name": "Pipeline runs", "createdAt": int(time.time() * 1000), "state": json.dumps(state)})


def _width(metric: str) -> int:
    """Pixels for a column headed ``metric``: the table's default width cuts longer names short."""
    return 7 * len(metric) + 24  # about a character's width in the header's font, and the cell's padding
