from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(train_data: Input[Dataset], data: Input[Dataset], model: Output[Model], train_sets: list, val_set: str,
          preset: str, steps: int, batch_size: int, data_root: str, tracking_uri: str, experiment: str, job_id: str,
          device: str = "cpu", num_devices: int = 1):
    """Trains the CRNN on the converted training splits, validating on ``val_set`` of ``data``;
    ``steps``/``batch_size`` 0 keep the preset's. ``device`` npu runs one process per NPU (``launch-npu``).
    Checkpoints go to this run's folder under ``data_root``, where a retried task resumes; ``model`` gets the
    export."""
    from crnn import pipeline_data
    from crnn import steps as crnn_steps
    from crnn.tracking import Tracking

    tracking = Tracking.for_pipeline(tracking_uri, experiment, job_id)
    train_dirs, val_dir = pipeline_data.training_folders(train_data.path, data.path, train_sets, val_set)
    work = pipeline_data.run_folder(data_root, job_id) / "train"
    result = crnn_steps.train_on(device, num_devices, preset, train_dirs, work, val_dir=val_dir, steps=steps,
                                 batch_size=batch_size, tracking=tracking)
    pipeline_data.publish_model(work, model.path)
    model.metadata.update(result | {"preset": preset, "device": device, "devices": num_devices})
