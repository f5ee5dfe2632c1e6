"""The KFP run a step belongs to, on every backend.

The pipeline hands each task ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``, which KFP backends resolve to the run's id
from 2.5.0 on (kubeflow/pipelines#11599); before that a task receives the literal placeholder
(``backend/src/v2/driver/driver.go`` @ 2.4.1 passes the constant through). Every pod of a run carries the
label ``pipeline/runid`` with the run's id (``apiserver/template/v2_template.go`` @ 2.2.0 and @ 2.17.0,
``SetPodMetadataLabels``), which the compiled pipeline exposes to its tasks as ``RUN_ID_ENV`` through the
downward API (``fieldPathAsEnv``, honoured by the driver from 2.1.0 on).
"""

from __future__ import annotations

import os

RUN_ID_ENV = "CRNN_KFP_RUN_ID"
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"


def unresolved(value: str) -> bool:
    """Whether ``value`` is a KFP placeholder the backend left as it was."""
    return value.startswith("{{$.") and value.endswith("}}")


def pipeline_job_id(given: str) -> str:
    """The run's id: ``given`` when the backend resolved it, else the pod's ``pipeline/runid`` label."""
    if given and not unresolved(given):
        return given
    from_label = os.environ.get(RUN_ID_ENV, "")
    if from_label and not unresolved(from_label):
        return from_label
    raise ValueError(f"the pipeline job id is {given!r}, a placeholder this KFP backend does not resolve (before "
                     f"2.5), and {RUN_ID_ENV} is not set: use a pipeline compiled by `crnn pipeline compile`, which "
                     f"sets it from the pod's pipeline/runid label")


def pipeline_job_name(given: str, job_id: str) -> str:
    """The run's name: ``given`` when the backend resolved it, else one made of its id."""
    return given if given and not unresolved(given) else f"crnn-{job_id}"
