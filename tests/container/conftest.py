"""The pipeline in its containers (``make container-test``): kfp.local's DockerRunner on the image that
``make images`` built, against a real ``mlflow server`` on the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.tiny_pipeline import run_tiny_pipeline

# What the make target says: the image to run and, for podman, the configuration it runs with.
IMAGE_ENV, TOOL_ENV, BASES_ENV = "CRNN_LOCAL_IMAGE", "CRNN_CONTAINER_TOOL", "CRNN_IMAGE_BASES"
ASCEND_IMAGE_ENV = "CRNN_ASCEND_IMAGE"

# Each task as a cluster runs it: uid 1000, a read-only root file system, only /tmp and the pipeline root
# (which the runner mounts) writable; the host's network, where the tracking server listens on loopback.
DATA_FOLDER = "datasets"
RUNNER = ("local.DockerRunner(read_only=True, tmpfs={'/tmp': ''}, user='1000:1000', network_mode='host')")
# Each task's exit status read before its container goes (kept_containers says why).
RUNNER_SETUP = "from tests.container import kept_containers; kept_containers.install()"


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory):
    """The Docker API to run the containers through: the Docker engine's, or a podman service started here."""
    if os.environ.get(TOOL_ENV, "docker") != "podman":
        yield os.environ.get("DOCKER_HOST")
        return
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert service.poll() is None and time.monotonic() < deadline, "podman system service did not start"
            time.sleep(0.1)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()


def _built(variable: str) -> str:
    name = os.environ.get(variable)
    assert name, f"{variable} is not set: run the container tests with `make container-test`"
    return name


@pytest.fixture(scope="session")
def image() -> str:
    """The cpu image."""
    return _built(IMAGE_ENV)


@pytest.fixture(scope="session")
def ascend_image() -> str:
    """The ascend image, on the stand-in base."""
    return _built(ASCEND_IMAGE_ENV)


@pytest.fixture(scope="session")
def tracked_pipeline(mlflow_server, tmp_path_factory, docker_host, image):
    """The tiny pipeline, every task in a container of ``image``: (server, output folder, summary)."""
    out = tmp_path_factory.mktemp("pipeline-in-containers")
    root = out / "pipeline_root"
    root.mkdir()
    root.chmod(0o777)  # the containers write there as uid 1000
    env = os.environ | {IMAGE_ENV: image} | ({"DOCKER_HOST": docker_host} if docker_host else {})
    # The data root inside the pipeline root: the only folder kfp.local's DockerRunner mounts into the containers.
    summary = run_tiny_pipeline(out, mlflow_server.url, env, runner=RUNNER, timeout=1200,
                                data_root=root / DATA_FOLDER, setup=RUNNER_SETUP)
    return mlflow_server, out, summary


def tool() -> str | None:
    return shutil.which(os.environ.get(TOOL_ENV, "docker"))
