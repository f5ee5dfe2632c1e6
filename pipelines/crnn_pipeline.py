"""download -> convert -> train -> evaluate (one task per benchmark) -> register, with an MLflow parent run."""

from pathlib import Path

from kfp import compiler, dsl

from components.convert import convert
from components.download import download
from components.evaluate import evaluate
from components.register import register
from components.run_tracking import finish_run, start_run
from components.train import train
from crnn.data import splits
from crnn.data.synthetic import SyntheticSpec
from crnn.registry.register import DEFAULT_MODEL_NAME
from crnn.tracking import DEFAULT_EXPERIMENT

PIPELINE_NAME = "crnn-training"
SYNTHETIC = SyntheticSpec()


@dsl.pipeline(name=PIPELINE_NAME, description="Train CRNN scene-text recognition end to end")
def crnn_pipeline(
    tracking_uri: str = "",
    experiment: str = DEFAULT_EXPERIMENT,
    artifact_location: str = "",
    run_name: str = "",
    datasets: list = [splits.SYNTHETIC],
    mirror: str = "",
    train_sets: list = list(splits.DEFAULT_TRAIN_SETS),
    val_set: str = splits.DEFAULT_VAL_SET,
    benchmarks: list = list(splits.DEFAULT_BENCHMARKS),
    seed: int = SYNTHETIC.seed,
    train_size: int = SYNTHETIC.train_size,
    val_size: int = SYNTHETIC.val_size,
    test_size: int = SYNTHETIC.test_size,
    shard_size: int = 10_000,
    preset: str = "quick",
    steps: int = 0,
    batch_size: int = 0,
    model_name: str = DEFAULT_MODEL_NAME,
):
    """``datasets``: catalog names to download (or ``synthetic``); ``train_sets``, ``val_set`` and
    ``benchmarks`` name converted splits as ``<dataset>/<split>``."""
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    # Every task finds the MLflow parent run by the job id (see crnn.tracking.Tracking for why).
    mlflow = {"tracking_uri": tracking_uri, "experiment": experiment, "job_id": job_id}
    with dsl.ExitHandler(finish_run(**mlflow).set_caching_options(False)):
        parent = start_run(run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                           artifact_location=artifact_location, **mlflow).set_caching_options(False)
        raw = download(datasets=datasets, mirror=mirror, seed=seed, train_size=train_size, val_size=val_size,
                       test_size=test_size, **mlflow).after(parent)
        data = convert(raw=raw.outputs["raw"], train_sets=train_sets, val_set=val_set, benchmarks=benchmarks,
                       shard_size=shard_size, **mlflow)
        # Only download and convert may come from the cache: the later steps must log under this run.
        model = train(data=data.outputs["data"], train_sets=train_sets, val_set=val_set, preset=preset,
                      steps=steps, batch_size=batch_size, **mlflow).set_caching_options(False)
        with dsl.ParallelFor(benchmarks, parallelism=2) as benchmark:
            scores = evaluate(model=model.outputs["model"], data=data.outputs["data"], benchmark=benchmark,
                              **mlflow).set_caching_options(False)
        register(model=model.outputs["model"], reports=dsl.Collected(scores.outputs["report"]),
                 model_name=model_name, **mlflow).set_caching_options(False)


def compile_pipeline(dest: Path) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(crnn_pipeline, str(dest))
    return dest
