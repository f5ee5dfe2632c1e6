from kfp import dsl
from kfp.dsl import Input, Model

from components import BASE_IMAGE


# The gate's defaults are crnn.registry.gate's DEFAULT_MIN_AVERAGE and DEFAULT_MAX_DROP_POINTS, typed as
# literals: the container runs this function's source alone, where a module-level name is undefined. The
# pipeline always passes both; tests/test_compile.py checks that these agree with the constants.
@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register(model: Input[Model], benchmarks: list, data_root: str, model_name: str, tracking_uri: str,
             experiment: str, job_id: str, min_average: float = 0.8, max_drop_points: float = 1.0) -> str:
    """Registers a new version of the model with every benchmark's accuracy (the reports the evaluate tasks
    kept under ``data_root``) as ``candidate``; it becomes ``champion`` if it passes the gate. Returns the
    version."""
    from crnn import pipeline_data, steps
    from crnn.job_id import pipeline_job_id
    from crnn.registry.gate import GateRule
    from crnn.registry.register import VERSION_PIPELINE_RUN_TAG
    from crnn.tracking import Tracking

    version, decision = steps.register(
        steps.export_dir(model.path), pipeline_data.gather_reports(data_root, job_id, benchmarks),
        Tracking.for_pipeline(tracking_uri, experiment, job_id), name=model_name,
        tags={VERSION_PIPELINE_RUN_TAG: pipeline_job_id(job_id)}, rule=GateRule(min_average, max_drop_points))
    print(decision.format_table())
    return version
