"""``--model`` as users give it: an exported model folder, an MLflow model folder, or an MLflow URI
(``models:/crnn@champion``, ``models:/crnn/3``, ``runs:/<run id>/...``, an artifact URI)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from crnn.model.export import MODEL_FILE, WEIGHTS_FILE, saved_model_file
from crnn.registry.logged_model import record
from crnn.registry.pyfunc import EXPORT_ARTIFACT

log = logging.getLogger(__name__)

_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_model_uri(model: str) -> bool:
    return model.startswith(_URI_SCHEMES) or "://" in model


def local_export(model: str | Path, tracking_uri: str | None = None, download_to: Path | None = None) -> Path:
    """The exported model folder (model file + recipe) that ``model`` names, downloaded first when it is a
    URI (into ``download_to``, default a new temporary folder)."""
    model = str(model)
    if not is_model_uri(model):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"{model}: no such model folder (nor an MLflow URI such as models:/crnn@champion)")
        return _export_inside(path, model)
    if not tracking_uri and model.startswith(_URI_SCHEMES):
        # MLflow would fall back to ./mlflow.db: an empty registry created in the working directory.
        raise ValueError(f"{model}: an MLflow URI needs the tracking server: set --tracking-uri or "
                         "MLFLOW_TRACKING_URI")
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    if tracking_uri:  # models:/ URIs are looked up in the registry, which is the tracking server here
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    dest = Path(download_to or tempfile.mkdtemp(prefix="crnn-model-"))
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(dest))
    except MlflowException as error:
        raise ValueError(f"{model}: cannot fetch the model: {error.message}") from error
    export = _export_inside(Path(local), model)
    model_id = _logged_model_named(model, tracking_uri) if tracking_uri else None
    if model_id:  # our own copy: what scores it can be linked to the model it came from
        record(export, model_id)
    return export


def _logged_model_named(uri: str, tracking_uri: str) -> str | None:
    """The logged model (MLflow 3) a ``models:/`` URI names: ``models:/<model id>`` itself, or the model a
    registered version (``models:/crnn/3``, ``models:/crnn@champion``) was registered from; None for other
    forms (``models:/crnn/latest``, a stage) or where the registry cannot say: the link is a nicety."""
    if not uri.startswith("models:/"):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, _, version = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    if not version and not alias:
        return name if name.startswith("m-") else None
    if not alias and not version.isdigit():
        return None
    client = MlflowClient(tracking_uri)
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as error:
        log.warning("%s: its logged model is not known (%s); scores go in unlinked", uri, str(error)[:200])
        return None
    source = found.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _export_inside(path: Path, named: str) -> Path:
    for candidate in (path, path / "artifacts" / EXPORT_ARTIFACT):
        if saved_model_file(candidate):
            return candidate
    raise FileNotFoundError(f"{named}: neither an exported CRNN model ({MODEL_FILE} or {WEIGHTS_FILE}) nor an MLflow "
                            "model of one")
