from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(model: Input[Model], data: Input[Dataset], benchmark: str, metrics: Output[Metrics],
             report: Output[Artifact], tracking_uri: str, experiment: str, job_id: str):
    """One benchmark: word accuracy and NED into report.json, the Metrics artifact and MLflow."""
    from crnn import steps
    from crnn.tracking import Tracking

    tracking = Tracking(tracking_uri or None, pipeline_run_id=job_id, experiment=experiment)
    result = steps.evaluate(steps.export_dir(model.path), {benchmark: steps.benchmark_dir(data.path, benchmark)},
                            report.path, tracking)
    entry = result["benchmarks"][benchmark]
    metrics.log_metric(f"accuracy/{benchmark}", entry["accuracy"])
    metrics.log_metric(f"ned/{benchmark}", entry["ned"])
    metrics.log_metric(f"num_samples/{benchmark}", entry["num_samples"])
