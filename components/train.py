from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(train_data: Input[Dataset], data: Input[Dataset], model: Output[Model], train_sets: list, val_set: str,
          preset: str, steps: int, batch_size: int, tracking_uri: str, experiment: str, job_id: str):
    """Trains the CRNN on the converted training splits, validating on ``val_set`` of ``data``;
    ``steps``/``batch_size`` 0 keep the preset's."""
    from pathlib import Path

    from crnn import steps as crnn_steps
    from crnn.config import recipe_for
    from crnn.tracking import Tracking

    recipe = recipe_for(preset, steps=steps or None, batch_size=batch_size or None)
    result = crnn_steps.train(recipe, [Path(train_data.path) / key for key in train_sets], model.path,
                              val_dir=Path(data.path) / val_set if val_set else None,
                              tracking=Tracking.for_pipeline(tracking_uri, experiment, job_id))
    model.metadata.update({"steps": result.steps, "preset": preset, "val_accuracy": result.val_accuracy})
