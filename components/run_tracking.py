"""The pipeline run's MLflow parent run: opened first, closed by the exit handler whatever happened."""

from kfp import dsl

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
