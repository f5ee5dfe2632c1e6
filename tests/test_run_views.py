"""The runs-table views' contents (tests/test_mlflow_review.py shows MLflow's UI applying them)."""

import json
from urllib.parse import parse_qs

from crnn.run_views import STARTED_AT_TAG, metric_order, pipeline_runs_view, steps_link


def _state(view: str) -> dict:
    return json.loads(json.loads(view)["state"])


def test_columns_read_time_then_accuracy_then_the_steps_as_they_ran():
    keys = {"step_time_s/register", "accuracy/SVT", "pipeline_time_s", "accuracy/average", "step_time_s/train",
            "accuracy/weighted_average", "accuracy/IC13", "loss"}
    assert metric_order(keys, steps=["download", "train", "register"]) == [
        "pipeline_time_s", "accuracy/average", "accuracy/IC13", "accuracy/SVT", "accuracy/weighted_average",
        "step_time_s/train", "step_time_s/register"]


def test_a_new_view_keeps_the_earlier_runs_metric_columns_after_its_own():
    earlier = pipeline_runs_view(["pipeline_time_s", "accuracy/IIIT5K"])
    state = _state(pipeline_runs_view(["pipeline_time_s", "accuracy/SVT"], earlier))
    assert state["selectedColumns"] == ["attributes.`Version`", "metrics.`pipeline_time_s`", "metrics.`accuracy/SVT`",
                                        "metrics.`accuracy/IIIT5K`"]
    assert state["columnOrder"][0] == "duration"  # left out, the table would hide it
    assert state["searchFilter"] == "tags.`crnn.step` = 'pipeline'" and state["orderByAsc"] is False
    assert _state(pipeline_runs_view(["pipeline_time_s"], "not json"))["selectedColumns"][1:] == [
        "metrics.`pipeline_time_s`"]


def test_the_steps_link_filters_one_runs_steps_sorted_by_their_start():
    page, query = steps_link("7", "abc123").split("?", 1)
    assert page == "#/experiments/7/runs"
    assert parse_qs(query) == {"searchFilter": ["tags.`mlflow.parentRunId` = 'abc123'"],
                      "orderByKey": [f"tags.`{STARTED_AT_TAG}`"], "orderByAsc": ["true"]}
