"""The pipeline run's MLflow parent run: opened first, closed by the exit handler whatever happened; and the
cached data steps' records logged under it."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def start_run(tracking_uri: str, experiment: str, run_name: str, job_name: str, job_id: str,
              artifact_location: str) -> str:
    """Returns the parent run's id ("" when tracking is off)."""
    from crnn.tracking import resolve_tracking_uri, start_pipeline_run

    uri = resolve_tracking_uri(tracking_uri)
    if not uri:
        return ""
    return start_pipeline_run(uri, run_name or job_name, pipeline_run_id=job_id, experiment=experiment,
                              artifact_location=artifact_location or None)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finish_run(tracking_uri: str, experiment: str, job_id: str, status: dsl.PipelineTaskFinalStatus):
    """Marks the parent run of pipeline job ``job_id`` FINISHED or FAILED from the pipeline's final status."""
    from crnn.tracking import end_pipeline_run, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri:
        end_pipeline_run(uri, job_id, "FINISHED" if status.state == "SUCCEEDED" else "FAILED", experiment)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def log_data_steps(raw: Input[Dataset], data: Input[Dataset], train_data: Input[Dataset], tracking_uri: str,
                   experiment: str, job_id: str):
    """Logs the data steps' records (download, convert, merge) as child runs of this pipeline run's parent,
    whether they ran now or came from KFP's cache (tagged ``crnn.cached``): never cached itself."""
    from crnn.tracking import Tracking, log_step_records

    log_step_records([raw.path, data.path, train_data.path], Tracking.for_pipeline(tracking_uri, experiment, job_id))
