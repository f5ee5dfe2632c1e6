"""The trained model as MLflow 3 keeps models: a LoggedModel whose source is the train run.

The train step logs the export as the pyfunc ``model`` (signature, input example, the recipe as the model's
parameters) and writes the model's id beside the export (``LOGGED_MODEL_FILE``). The evaluate steps link their
scores to that id, and the register step registers it, so the registry's version, the model's page, its
metrics and its source run all point at the same thing. Where no id can be had (MLflow 2 on Ascend's stack,
or another tracking server than the one the model was logged to) the register step logs the model itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from crnn.config import RECIPE_FILE, Recipe
from crnn.files import write_json

if TYPE_CHECKING:
    from crnn.tracking import StepRun

log = logging.getLogger(__name__)

LOGGED_MODEL_FILE = "logged_model.json"  # beside an export: {"model_id": ...}
MODEL_NAME = "model"  # the logged model's name in its run


def can_log_models() -> bool:
    """MLflow 3's LoggedModel API is here (the MLflow 2 client of Ascend's Python 3.9 stack has none)."""
    from mlflow.tracking import MlflowClient

    return hasattr(MlflowClient, "create_logged_model")


def log_model(export_dir: Path, run: StepRun, step: int = 0) -> str:
    """Logs ``export_dir`` as the pyfunc ``model`` of ``run`` (and an output of its parent run); returns its
    model id. A model whose files did not all arrive is marked FAILED."""
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    import crnn
    from crnn.registry.pyfunc import EXPORT_ARTIFACT, CrnnTextReader, input_example, signature

    client = MlflowClient(run.tracking_uri)
    params = {key: str(value) for key, value in Recipe.load(Path(export_dir) / RECIPE_FILE).flat_params().items()}
    experiment_id = run.experiment_id or client.get_run(run.run_id).info.experiment_id
    model = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run.run_id, params=params,
                                       model_type="crnn")
    mlflow.set_tracking_uri(run.tracking_uri)
    try:
        mlflow.pyfunc.log_model(
            name=MODEL_NAME, model_id=model.model_id, python_model=CrnnTextReader(),
            artifacts={EXPORT_ARTIFACT: str(export_dir)},
            # The package travels with the model, so that it loads where crnn is not installed.
            code_paths=[str(Path(crnn.__file__).parent)], pip_requirements=_requirements(),
            signature=signature(), input_example=input_example())
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed: the model then stays PENDING
            client.finalize_logged_model(model.model_id, "FAILED")
        raise
    try:  # the UI's Logged models, on both runs: without them the model is whole all the same
        for run_id in filter(None, (run.run_id, run.parent_run_id)):
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    except MlflowException as error:
        log.warning("model %s is logged, but not listed as its runs' output: %s", model.model_id, str(error)[:300])
    log.info("logged the model as %s in run %s", model.model_id, run.run_id)
    return model.model_id


def record(export_dir: Path, model_id: str) -> None:
    """Writes which model ``export_dir`` was logged as beside it, for the steps that read the export."""
    write_json(Path(export_dir) / LOGGED_MODEL_FILE, {"model_id": model_id})


def logged_model_id(export_dir: Path, tracking_uri: str | None) -> str | None:
    """The id of the LoggedModel ``export_dir`` was logged as, if that model is on ``tracking_uri``'s server
    (None if it is not); a server that cannot say is an error, not a reason to log the model again."""
    path = Path(export_dir) / LOGGED_MODEL_FILE
    if not tracking_uri or not path.is_file() or not can_log_models():
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    model_id = json.loads(path.read_text())["model_id"]
    try:
        MlflowClient(tracking_uri).get_logged_model(model_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.info("%s: model %s is not on %s", path, model_id, tracking_uri)
        return None
    return model_id


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in
            ("tensorflow", "keras", "numpy", "opencv-python-headless", "mlflow", "pandas")]
