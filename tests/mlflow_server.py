"""A real ``mlflow server`` on loopback (SQLite backend, local artifacts) that a test can stop and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    def __init__(self, root: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, artifacts_destination: str | None = None):
        """``artifacts_destination``: where the server stores artifacts (default ``root/artifacts``), e.g. an
        ``s3://`` URI, with ``env`` saying how to reach it (``MLFLOW_S3_ENDPOINT_URL``...)."""
        self.root = Path(root)
        self.artifacts_destination = artifacts_destination or str(self.root / "artifacts")
        self.extra_args, self.env = list(extra_args), dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "server.log"
        self._process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", self.artifacts_destination,
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1", *self.extra_args]

    def start(self, timeout: float = 120) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True, env=os.environ | self.env)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.3)
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or starting too slowly to answer
            return False

    def stop(self) -> None:
        if self._process is None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None
        while self.healthy():
            time.sleep(0.1)

    def api(self, path: str, **params) -> dict:
        """GET on the REST API (``runs/get``, ``metrics/get-history``...), failing on any error status."""
        response = requests.get(f"{self.url}/api/2.0/mlflow/{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()
