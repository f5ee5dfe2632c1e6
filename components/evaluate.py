from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(model: Input[Model], data: Input[Dataset], benchmark: str, metrics: Output[Metrics],
             report: Output[Artifact], data_root: str, tracking_uri: str, experiment: str, job_id: str):
    """One benchmark split (``<dataset>/<split>``): word accuracy and NED into report.json, the Metrics
    artifact and MLflow; ``report`` also holds test_result.txt, the sample predictions (PNG) and the most
    frequent errors. report.json is kept under ``data_root`` too, for the register task to gather."""
    from crnn import pipeline_data, steps
    from crnn.data.splits import benchmark_name
    from crnn.data.store import resolve
    from crnn.tracking import Tracking

    name = benchmark_name(benchmark)
    result = steps.evaluate(steps.export_dir(model.path), {name: resolve(data.path) / benchmark}, report.path,
                            Tracking.for_pipeline(tracking_uri, experiment, job_id))
    pipeline_data.keep_report(data_root, job_id, report.path)
    entry = result["benchmarks"][name]
    metrics.log_metric(f"accuracy/{name}", entry["accuracy"])
    metrics.log_metric(f"ned/{name}", entry["ned"])
    metrics.log_metric(f"num_samples/{name}", entry["num_samples"])
    metrics.log_metric(f"num_samples_listed/{name}", entry["num_samples_listed"])
    metrics.log_metric(f"images_per_sec/{name}", entry["images_per_sec"])
