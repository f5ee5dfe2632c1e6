"""Shared fixtures: tiny datasets made by the real download and convert code, and a tiny trained model."""

from __future__ import annotations

import http.server
import os
import threading
from functools import partial
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from crnn.data.synthetic import SyntheticSpec  # noqa: E402

TINY_SPEC = SyntheticSpec(seed=3, train_size=96, val_size=16, test_size=12)


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    from crnn.data.download import download_synthetic

    out = tmp_path_factory.mktemp("raw")
    download_synthetic(out, TINY_SPEC)
    return out


@pytest.fixture(scope="session")
def converted_dir(raw_dir, tmp_path_factory) -> Path:
    from crnn.data.convert import convert_all

    out = tmp_path_factory.mktemp("converted")
    convert_all(raw_dir, out, shard_size=40)
    return out


@pytest.fixture(scope="session")
def trained_dir(converted_dir, tmp_path_factory) -> Path:
    """A model trained for a few real steps with the tiny preset; ``export/`` holds the exported model."""
    from crnn.config import recipe_for
    from crnn.train.loop import train_model

    out = tmp_path_factory.mktemp("trained")
    train_model(recipe_for("tiny"), converted_dir / "mjsynth" / "train", out,
                val_dir=converted_dir / "mjsynth" / "val")
    return out


_RECORDER = None


@pytest.fixture(autouse=True)
def _restore_print():
    """kfp.local (2.17) indents task output by swapping ``builtins.print``; tasks run in parallel threads can
    leave the swap in place (each restores what it found, another task's swap). Each test gets the real one."""
    import builtins

    real = builtins.print
    yield
    builtins.print = real


@pytest.fixture
def reliability(request):
    """``record(area, fault, outcome, lost="nothing")`` for the reliability suite's table (docs/reliability.md)."""
    global _RECORDER
    from tests.reliability import Recorder

    _RECORDER = _RECORDER or Recorder()
    return lambda area, fault, outcome, lost="nothing": _RECORDER.record(request.node.nodeid, area, fault,
                                                                          outcome, lost)


def pytest_sessionfinish(session, exitstatus):
    if _RECORDER is not None:
        _RECORDER.write()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on loopback for the whole session (SQLite backend, local artifacts)."""
    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


# Credentials in the environment of the tracked pipeline run; tests/test_security.py looks for them in
# everything the run wrote.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEKEY7Q3ZT9XW2",
                    "AWS_SECRET_ACCESS_KEY": "fake-secret-9f8e7d6c5b4a",
                    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-41d2",
                    "KF_PIPELINES_TOKEN": "fake-kfp-token-77aa"}


@pytest.fixture(scope="session")
def tracked_pipeline(mlflow_server, tmp_path_factory):
    """The tiny pipeline run once through kfp.local in a process of its own, tracked over HTTP, with fake
    credentials in its environment and its whole output in ``pipeline.log``: (server, output folder, summary)."""
    from tests.tiny_pipeline import run_tiny_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    return mlflow_server, out, run_tiny_pipeline(out, mlflow_server.url, os.environ | FAKE_CREDENTIALS)


@pytest.fixture
def sqlite_tracking(tmp_path) -> str:
    from crnn.tracking import sqlite_uri

    return sqlite_uri(tmp_path / "mlflow.db")


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on loopback serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
