"""The pipeline run's MLflow parent run: opened first, closed by the exit handler whatever happened; and the
cached data steps' records logged under it."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def start_run(tracking_uri: str, experiment: str, run_name: str, job_name: str, job_id: str,
              artifact_location: str) -> str:
    """Returns the parent run's id ("" when tracking is off)."""
    from crnn.job_id import pipeline_job_id, pipeline_job_name
    from crnn.tracking import resolve_tracking_uri, start_pipeline_run

    uri = resolve_tracking_uri(tracking_uri)
    if not uri:
        return ""
    job_id = pipeline_job_id(job_id)
    return start_pipeline_run(uri, run_name or pipeline_job_name(job_name, job_id), pipeline_run_id=job_id,
                              experiment=experiment, artifact_location=artifact_location or None)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finish_run(tracking_uri: str, experiment: str, job_id: str, data_root: str):
    """Ends the parent run of pipeline job ``job_id``: FINISHED when its last step finished, else FAILED. It
    takes no dsl.PipelineTaskFinalStatus, which KFP backends before 2.14 refuse (crnn.tracking says more).
    Then removes the run's folder under ``data_root`` (checkpoints, reports), whatever the outcome."""
    from crnn import pipeline_data
    from crnn.job_id import pipeline_job_id
    from crnn.tracking import end_pipeline_run, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri:
        end_pipeline_run(uri, pipeline_job_id(job_id), experiment)
    pipeline_data.remove_run_folder(data_root, job_id)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def log_data_steps(raw: Input[Dataset], data: Input[Dataset], train_data: Input[Dataset], tracking_uri: str,
                   experiment: str, job_id: str):
    """Logs the data steps' records (download, convert, merge) as child runs of this pipeline run's parent,
    whether they ran now or came from KFP's cache (tagged ``crnn.cached``): never cached itself."""
    from crnn.pipeline_data import step_records
    from crnn.tracking import Tracking, log_step_records

    log_step_records(step_records([raw.path, data.path, train_data.path]),
                     Tracking.for_pipeline(tracking_uri, experiment, job_id))
