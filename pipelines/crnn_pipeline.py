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
    S3_SECRET,
    TARGETS,
    Target,
    image,
)
from crnn.cluster.targets import target as target_by_name
from crnn.config import PIPELINE_PRESET
from crnn.credentials import SECRETS_MOUNT
from crnn.data import splits
from crnn.data.shards import DEFAULT_SHARD_SIZE
from crnn.data.synthetic import SyntheticSpec
from crnn.files import atomic_path
from crnn.job_id import RUN_ID_ENV, RUN_ID_FIELD
from crnn.registry.gate import DEFAULT_MAX_DROP_POINTS, DEFAULT_MIN_AVERAGE
from crnn.registry.register import DEFAULT_MODEL_NAME
from crnn.tracking import DEFAULT_EXPERIMENT
from pipelines.kfp_backends import BACKENDS, for_every_backend, refusals

PIPELINE_NAME = "crnn-training"
SYNTHETIC = SyntheticSpec()


def make_pipeline(target: Target = TARGETS["local"], nodes: int = 1, registry: str = DEFAULT_REGISTRY,
                  tag: str = DEFAULT_TAG):
    """The pipeline for ``target``: ``local`` for kfp.local; a cluster target adds the PVC, the Secrets, the
    accelerator, node selector and tolerations of its train task, and trains as a training job when ``nodes``
    > 1 (a TFJob) or on NPUs (an AscendJob, on one node too: on Ascend clusters NPUs go to the pods Volcano
    schedules, and the ascend-operator joins them into one HCCL group)."""
    if nodes > 1 and not target.on_cluster:
        raise ValueError("training on several nodes needs a cluster target (cpu, gpu or ascend)")

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
        train_deadline_hours: float = 168.0,
        data_root: str = DATASETS_MOUNT if target.on_cluster else "",
    ):
        """``datasets``: catalog names to download (or ``synthetic``); ``train_sets``, ``val_set`` and
        ``benchmarks`` name converted splits as ``<dataset>/<split>``; ``convert_slices`` is how many tasks
        convert the training sets. The model becomes ``champion`` if its average accuracy is at least
        ``min_average`` and no benchmark falls more than ``max_drop_points`` below the champion's.
        ``train_deadline_hours``: how long a multi-node training job may run. ``data_root``: where the datasets
        are written, by content key, and found again (the datasets volume's mount on a cluster); the artifacts
        carry references to them."""
        job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # Every task finds the MLflow parent run by the job id (see crnn.tracking.Tracking for why).
        mlflow = {"tracking_uri": tracking_uri, "experiment": experiment, "job_id": job_id}
        finish = finish_run(data_root=data_root, **mlflow).set_caching_options(False)
        with dsl.ExitHandler(finish):
            parent = start_run(run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                               artifact_location=artifact_location, **mlflow).set_caching_options(False)
            # Downloads fail for passing reasons (a mirror restarting): retried. Download and conversion are
            # cached, so they take nothing that differs between runs (not the job id): they record their values
            # in their data's folder, and log_data_steps, never cached, logs those under this run.
            raw = download(data_root=data_root, datasets=datasets, mirror=mirror, seed=seed, train_size=train_size,
                           val_size=val_size, test_size=test_size).after(parent)
            raw.set_retry(3, backoff_duration="30s", backoff_factor=2)
            data = convert(raw=raw.outputs["raw"], data_root=data_root, val_set=val_set, benchmarks=benchmarks,
                           shard_size=shard_size)
            # The training sets are large: their shards are converted by `convert_slices` tasks, then merged.
            plan = plan_slices(raw=raw.outputs["raw"], data_root=data_root, train_sets=train_sets,
                               shard_size=shard_size, slices=convert_slices)
            with dsl.ParallelFor(plan.output) as part:
                slice_task = convert_slice(raw=raw.outputs["raw"], part=part, shard_size=shard_size)
            # The slices are found through the plan, not gathered as outputs (dsl.Collected): fan-in of artifacts
            # needs a KFP backend of 2.14 or later.
            train_data = merge_slices(raw=raw.outputs["raw"], plan=plan.output, data_root=data_root,
                                      train_sets=train_sets, shard_size=shard_size).after(slice_task)
            data_steps = log_data_steps(raw=raw.outputs["raw"], data=data.outputs["data"],
                                        train_data=train_data.outputs["train_data"],
                                        **mlflow).set_caching_options(False)
            # Only download and conversion may come from the cache: the later steps must log under this run.
            model = _train_task(target, nodes, image(target.image, registry, tag), train_deadline_hours, data_root,
                                train_data=train_data.outputs["train_data"], data=data.outputs["data"],
                                train_sets=train_sets, val_set=val_set, preset=preset, steps=steps,
                                batch_size=batch_size, **mlflow).set_caching_options(False)
            with dsl.ParallelFor(benchmarks, parallelism=2) as benchmark:
                scores = evaluate(model=model.outputs["model"], data=data.outputs["data"], benchmark=benchmark,
                                  data_root=data_root, **mlflow).set_caching_options(False)
            # The reports are gathered from data_root, as the slices are (no dsl.Collected before KFP 2.14).
            registered = register(model=model.outputs["model"], benchmarks=benchmarks, data_root=data_root,
                                  model_name=model_name, min_average=min_average, max_drop_points=max_drop_points,
                                  **mlflow).set_caching_options(False).after(scores)
            if target.on_cluster:
                _on_cluster(target, nodes, raw, data_tasks=[raw, data, plan, slice_task, train_data],
                            readers=[data_steps, model, scores, registered, finish], model=model,
                            tracked=[parent, data_steps, model, scores, registered, finish])

    return crnn_pipeline


def _train_task(target: Target, nodes: int, job_image: str, deadline_hours: float, data_root: str,
                **inputs) -> dsl.PipelineTask:
    if _as_job(target, nodes):
        return train_job(target=target.name, workers=nodes, image=job_image, deadline_hours=deadline_hours,
                         data_root=data_root, **inputs)
    return train(device=target.device, num_devices=target.devices_per_node, data_root=data_root, **inputs)


def _as_job(target: Target, nodes: int) -> bool:
    return nodes > 1 or target.device == "npu"


def _on_cluster(target: Target, nodes: int, download_task: dsl.PipelineTask, data_tasks: list[dsl.PipelineTask],
                readers: list[dsl.PipelineTask], model: dsl.PipelineTask, tracked: list[dsl.PipelineTask]) -> None:
    """Cluster settings: MLflow credentials for every tracked task, S3 credentials where data is fetched, the
    datasets PVC wherever data is written or read, caching of the data steps, and the accelerator of the train
    task."""
    from kfp import kubernetes

    # Optional Secret volumes, which the steps read into their environment (crnn/credentials.py says why not
    # environment variables). S3: the endpoint and region too, when the Secret has them (a MinIO mirror).
    for task, secret in [*((task, MLFLOW_CLIENT_SECRET) for task in tracked), (download_task, S3_SECRET)]:
        kubernetes.use_secret_as_volume(task, secret, mount_path=f"{SECRETS_MOUNT}/{secret}", optional=True)
    # The run's id where the backend leaves the job id placeholder unresolved (before 2.5): crnn/job_id.py.
    for task in tracked:
        kubernetes.use_field_path_as_env(task, RUN_ID_ENV, RUN_ID_FIELD)
    for task in data_tasks:
        task.set_caching_options(True)
    for task in [*data_tasks, *readers]:
        kubernetes.mount_pvc(task, DATASETS_PVC, DATASETS_MOUNT)
    if _as_job(target, nodes):  # the task only watches the job; the job's workers hold the accelerators
        model.set_cpu_request("1").set_memory_request("4Gi")
        return
    model.set_cpu_request("8").set_memory_request("64Gi")
    if target.accelerator:
        model.set_accelerator_type(target.accelerator).set_accelerator_limit(target.devices_per_node)
    for label, value in target.node_selector.items():
        kubernetes.add_node_selector(model, label, value)
    for toleration in target.tolerations:
        kubernetes.add_toleration(model, key=toleration.key, operator=toleration.operator,
                                  effect=toleration.effect)


crnn_pipeline = make_pipeline()  # kfp.local's pipeline (make run)


def compile_pipeline(dest: Path, target: str = "local", nodes: int = 1, registry: str = DEFAULT_REGISTRY,
                     tag: str = DEFAULT_TAG) -> Path:
    """Writes the pipeline YAML for ``target``: every task on ``<registry>/cpu:<tag>`` but the train task, on
    the target's image; one file for every supported KFP backend (``pipelines.kfp_backends``)."""
    chosen = target_by_name(target)
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(make_pipeline(chosen, nodes, registry, tag), str(compiled))
        documents = list(yaml.safe_load_all(compiled.read_text()))
    for name, executor in documents[0]["deploymentSpec"]["executors"].items():
        kind = chosen.image if name == "exec-train" else "cpu"
        executor["container"]["image"] = image(kind, registry, tag)
    if len(documents) > 1:
        for_every_backend(documents[1])
    refused = {b.version: r for b in BACKENDS if (r := refusals(documents[0], documents[-1], b))}
    if refused:  # a change to the pipeline that some supported backend cannot run
        raise ValueError(f"the compiled pipeline would not run on KFP {refused}: see pipelines/kfp_backends.py")
    with atomic_path(dest) as out:
        out.write_text(yaml.safe_dump_all(documents, sort_keys=True))
    return dest
