from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(data: Input[Dataset], model: Output[Model], preset: str, steps: int, batch_size: int,
          tracking_uri: str, experiment: str, job_id: str):
    """Trains the CRNN on the converted training split; ``steps``/``batch_size`` 0 keep the preset's."""
    from crnn import steps as crnn_steps
    from crnn.config import recipe_for
    from crnn.tracking import Tracking

    tracking = Tracking(tracking_uri or None, pipeline_run_id=job_id, experiment=experiment)
    recipe = recipe_for(preset, steps=steps or None, batch_size=batch_size or None)
    result = crnn_steps.train_on_converted(recipe, data.path, model.path, tracking)
    model.metadata.update({"steps": result.steps, "preset": preset, "val_accuracy": result.val_accuracy})
