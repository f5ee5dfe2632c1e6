"""download -> convert -> train -> evaluate (one task per benchmark) -> register, with an MLflow parent run."""

import tempfile
from pathlib import Path

import yaml
from kfp import compiler, dsl

from components.convert import convert, convert_slice, merge_slices, plan_slices
from components.download import download
from components.evaluate import evaluate
from components.register import register
from components.run_tracking import finish_run, log_data_steps, start_run
from components.train import train
from components.train_job import train_job
from crnn.cluster.targets import (
    DATASETS_MOUNT,
    DATASETS_PVC,
    DEFAULT_REGISTRY,
    DEFAULT_TAG,
    MLFLOW_CLIENT_SECRET,
    NAMESPACE,
    S3_SECRET,
    TARGETS,
    Target,
    image,
)
from crnn.cluster.targets import target as target_by_name
from crnn.config import PIPELINE_PRESET
from crnn.data import splits
from crnn.data.shards import DEFAULT_SHARD_SIZE
from crnn.data.synthetic import SyntheticSpec
from crnn.files import atomic_path
from crnn.registry.gate import DEFAULT_MAX_DROP_POINTS, DEFAULT_MIN_AVERAGE
from crnn.registry.register import DEFAULT_MODEL_NAME
from crnn.tracking import DEFAULT_EXPERIMENT

PIPELINE_NAME = "crnn-training"
SYNTHETIC = SyntheticSpec()


def make_pipeline(target: Target = TARGETS["local"], nodes: int = 1, registry: str = DEFAULT_REGISTRY,
                  tag: str = DEFAULT_TAG):
    """The pipeline for ``target``: ``local`` for kfp.local; a cluster target adds the PVC, the Secrets, the
    accelerator, node selector and tolerations of its train task, and trains as a TFJob when ``nodes`` > 1."""
    if nodes > 1 and not target.on_cluster:
        raise ValueError("training on several nodes needs a cluster target (cpu, gpu or ascend)")
    if nodes > 1 and target.device == "npu":
        raise ValueError("multi-node Ascend training is not supported yet: train on one 8-NPU node (nodes=1)")

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
        shard_size: int = DEFAULT_SHARD_SIZE,
        convert_slices: int = 2,
        preset: str = PIPELINE_PRESET,
        steps: int = 0,
        batch_size: int = 0,
        model_name: str = DEFAULT_MODEL_NAME,
        min_average: float = DEFAULT_MIN_AVERAGE,
        max_drop_points: float = DEFAULT_MAX_DROP_POINTS,
        namespace: str = NAMESPACE,
    ):
        """``datasets``: catalog names to download (or ``synthetic``); ``train_sets``, ``val_set`` and
        ``benchmarks`` name converted splits as ``<dataset>/<split>``; ``convert_slices`` is how many tasks
        convert the training sets. The model becomes ``champion`` if its average accuracy is at least
        ``min_average`` and no benchmark falls more than ``max_drop_points`` below the champion's. ``namespace``:
        where a multi-node training job is created."""
        job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # Every task finds the MLflow parent run by the job id (see crnn.tracking.Tracking for why).
        mlflow = {"tracking_uri": tracking_uri, "experiment": experiment, "job_id": job_id}
        finish = finish_run(**mlflow).set_caching_options(False)
        with dsl.ExitHandler(finish):
            parent = start_run(run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                               artifact_location=artifact_location, **mlflow).set_caching_options(False)
            # Downloads fail for passing reasons (a mirror restarting): retried. Download and conversion are
            # cached, so they take nothing that differs between runs (not the job id): they record their values
            # beside their outputs, and log_data_steps, never cached, logs those under this run.
            raw = download(datasets=datasets, mirror=mirror, seed=seed, train_size=train_size, val_size=val_size,
                           test_size=test_size).after(parent).set_retry(3, backoff_duration="30s", backoff_factor=2)
            data = convert(raw=raw.outputs["raw"], val_set=val_set, benchmarks=benchmarks, shard_size=shard_size)
            # The training sets are large: their shards are converted by `convert_slices` tasks, then merged.
            plan = plan_slices(raw=raw.outputs["raw"], train_sets=train_sets, shard_size=shard_size,
                               slices=convert_slices)
            with dsl.ParallelFor(plan.output) as ranges:
                part = convert_slice(raw=raw.outputs["raw"], ranges=ranges, shard_size=shard_size)
            train_data = merge_slices(raw=raw.outputs["raw"], parts=dsl.Collected(part.outputs["part"]),
                                      train_sets=train_sets, shard_size=shard_size)
            data_steps = log_data_steps(raw=raw.outputs["raw"], data=data.outputs["data"],
                                        train_data=train_data.outputs["train_data"],
                                        **mlflow).set_caching_options(False)
            # Only download and conversion may come from the cache: the later steps must log under this run.
            model = _train_task(target, nodes, image(target.image, registry, tag), namespace,
                                train_data=train_data.outputs["train_data"], data=data.outputs["data"],
                                train_sets=train_sets, val_set=val_set, preset=preset, steps=steps,
                                batch_size=batch_size, **mlflow).set_caching_options(False)
            with dsl.ParallelFor(benchmarks, parallelism=2) as benchmark:
                scores = evaluate(model=model.outputs["model"], data=data.outputs["data"], benchmark=benchmark,
                                  **mlflow).set_caching_options(False)
            registered = register(model=model.outputs["model"], reports=dsl.Collected(scores.outputs["report"]),
                                  model_name=model_name, min_average=min_average, max_drop_points=max_drop_points,
                                  **mlflow).set_caching_options(False)
            if target.on_cluster:
                _on_cluster(target, nodes, raw, data, train_data, model,
                            tracked=[parent, data_steps, model, scores, registered, finish])

    return crnn_pipeline


def _train_task(target: Target, nodes: int, job_image: str, namespace: str, **inputs) -> dsl.PipelineTask:
    if nodes > 1:
        return train_job(target=target.name, workers=nodes, image=job_image, namespace=namespace, **inputs)
    return train(device=target.device, num_devices=target.devices_per_node, **inputs)


def _on_cluster(target: Target, nodes: int, download_task: dsl.PipelineTask, convert_task: dsl.PipelineTask,
                merge_task: dsl.PipelineTask, train_task: dsl.PipelineTask,
                tracked: list[dsl.PipelineTask]) -> None:
    """Cluster settings: MLflow credentials for every tracked task, S3 credentials and the datasets PVC where
    data is fetched or shared, caching of the data steps, and the accelerator of the train task."""
    from kfp import kubernetes

    for task in tracked:
        kubernetes.use_secret_as_env(task, MLFLOW_CLIENT_SECRET, optional=True, secret_key_to_env={
            "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"})
    # The endpoint and region too, when the Secret has them: an s3:// mirror may be a MinIO, not AWS.
    kubernetes.use_secret_as_env(download_task, S3_SECRET, optional=True, secret_key_to_env={
        key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")})
    for task in (download_task, convert_task, merge_task):
        task.set_caching_options(True)
    kubernetes.mount_pvc(download_task, DATASETS_PVC, DATASETS_MOUNT)  # a file:// mirror may live there
    kubernetes.mount_pvc(train_task, DATASETS_PVC, DATASETS_MOUNT)  # multi-node jobs share data through it
    if nodes > 1:  # the task only stages data and watches the job; the job's workers hold the accelerators
        train_task.set_cpu_request("1").set_memory_request("4Gi")
        return
    train_task.set_cpu_request("8").set_memory_request("64Gi")
    if target.accelerator:
        train_task.set_accelerator_type(target.accelerator).set_accelerator_limit(target.devices_per_node)
    for label, value in target.node_selector.items():
        kubernetes.add_node_selector(train_task, label, value)
    for toleration in target.tolerations:
        kubernetes.add_toleration(train_task, key=toleration.key, operator=toleration.operator,
                                  effect=toleration.effect)


crnn_pipeline = make_pipeline()  # kfp.local's pipeline (make run)


def compile_pipeline(dest: Path, target: str = "local", nodes: int = 1, registry: str = DEFAULT_REGISTRY,
                     tag: str = DEFAULT_TAG) -> Path:
    """Writes the pipeline YAML for ``target``: every task on ``<registry>/cpu:<tag>`` but the train task, on
    the target's image."""
    chosen = target_by_name(target)
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(make_pipeline(chosen, nodes, registry, tag), str(compiled))
        documents = list(yaml.safe_load_all(compiled.read_text()))
    for name, executor in documents[0]["deploymentSpec"]["executors"].items():
        kind = chosen.image if name == "exec-train" else "cpu"
        executor["container"]["image"] = image(kind, registry, tag)
    with atomic_path(dest) as out:
        out.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return dest
