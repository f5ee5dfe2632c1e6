from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_job(train_data: Input[Dataset], data: Input[Dataset], model: Output[Model], train_sets: list,
              val_set: str, preset: str, steps: int, batch_size: int, data_root: str, tracking_uri: str,
              experiment: str, job_id: str, target: str, workers: int, image: str, deadline_hours: float):
    """Trains on ``workers`` nodes as a training job (a TFJob; an AscendJob on NPUs) in this task's namespace,
    reading the converted data on the datasets PVC: runs the job to the end (failing this task if it fails, the
    job failed by its operator after ``deadline_hours``) and brings the exported model back as this task's
    output."""
    from crnn import pipeline_data
    from crnn.cluster.job_task import train_as_job
    from crnn.cluster.jobs import JobPolicy
    from crnn.job_id import pipeline_job_id
    from crnn.tracking import Tracking

    train_dirs, val_dir = pipeline_data.training_folders(train_data.path, data.path, train_sets, val_set)
    result = train_as_job(train_dirs, val_dir, pipeline_data.run_folder(data_root, job_id) / "train", model.path,
                            preset, steps, batch_size, Tracking.for_pipeline(tracking_uri, experiment, job_id),
                            target, workers, image, pipeline_job_id(job_id),
                            policy=JobPolicy(deadline_seconds=int(deadline_hours * 3600)))
    model.metadata.update(result)
