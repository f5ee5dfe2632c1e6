"""download -> convert -> train -> evaluate (one task per benchmark) -> register, with an MLflow parent run."""

from pathlib import Path

from kfp import compiler, dsl

from components.convert import convert, convert_slice, merge_slices, plan_slices
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
    convert_slices: int = 2,
    preset: str = "quick",
    steps: int = 0,
    batch_size: int = 0,
    model_name: str = DEFAULT_MODEL_NAME,
    min_average: float = 0.9,
    max_drop_points: float = 1.0,
):
    """``datasets``: catalog names to download (or ``synthetic``); ``train_sets``, ``val_set`` and
    ``benchmarks`` name converted splits as ``<dataset>/<split>``; ``convert_slices`` is how many tasks
    convert the training sets. The model becomes ``champion`` if its average accuracy is at least
    ``min_average`` and no benchmark falls more than ``max_drop_points`` below the champion's."""
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    # Every task finds the MLflow parent run by the job id (see crnn.tracking.Tracking for why).
    mlflow = {"tracking_uri": tracking_uri, "experiment": experiment, "job_id": job_id}
    with dsl.ExitHandler(finish_run(**mlflow).set_caching_options(False)):
        parent = start_run(run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                           artifact_location=artifact_location, **mlflow).set_caching_options(False)
        raw = download(datasets=datasets, mirror=mirror, seed=seed, train_size=train_size, val_size=val_size,
                       test_size=test_size, **mlflow).after(parent)
        data = convert(raw=raw.outputs["raw"], val_set=val_set, benchmarks=benchmarks, shard_size=shard_size,
                       **mlflow)
        # The training sets are large: their shards are converted by `convert_slices` tasks, then merged.
        plan = plan_slices(raw=raw.outputs["raw"], train_sets=train_sets, shard_size=shard_size,
                           slices=convert_slices)
        with dsl.ParallelFor(plan.output) as ranges:
            part = convert_slice(raw=raw.outputs["raw"], ranges=ranges, shard_size=shard_size)
        train_data = merge_slices(raw=raw.outputs["raw"], parts=dsl.Collected(part.outputs["part"]),
                                  train_sets=train_sets, shard_size=shard_size, **mlflow)
        # Only download and conversion may come from the cache: the later steps must log under this run.
        model = train(train_data=train_data.outputs["train_data"], data=data.outputs["data"], train_sets=train_sets,
                      val_set=val_set, preset=preset, steps=steps, batch_size=batch_size,
                      **mlflow).set_caching_options(False)
        with dsl.ParallelFor(benchmarks, parallelism=2) as benchmark:
            scores = evaluate(model=model.outputs["model"], data=data.outputs["data"], benchmark=benchmark,
                              **mlflow).set_caching_options(False)
        register(model=model.outputs["model"], reports=dsl.Collected(scores.outputs["report"]),
                 model_name=model_name, min_average=min_average, max_drop_points=max_drop_points,
                 **mlflow).set_caching_options(False)


def compile_pipeline(dest: Path) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(crnn_pipeline, str(dest))
    return dest
