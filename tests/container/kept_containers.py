"""kfp.local's DockerRunner, with each task's exit status read before its container is removed.

kfp 2.17 (``kfp/local/docker_task_handler.py``, ``run_docker_container``) starts every task's container with
``auto_remove=True``, streams its logs, then waits for it. The engine removes an exited container at once, so
the wait mostly finds it gone: kfp then returns 0, and a task that failed is reported SUCCESS. Podman 4.3 also
answers the inspect that opens the log stream with 500 "no such container" (Docker: 404, which kfp expects)
when the container is being removed, and that fails the whole run (podman issue #17341 is the same race on
another endpoint). Keeping each container until its status has been read closes both; it is removed then.

kfp's function runs unchanged; only the two docker-py calls it makes are wrapped. ``install()`` puts them in
place in a process that runs a pipeline (``tests/tiny_pipeline.py``'s ``setup``); tests patch ``PATCHES``.
"""

from __future__ import annotations

from docker.models.containers import Container, ContainerCollection

_run, _wait = ContainerCollection.run, Container.wait


def _run_kept(self: ContainerCollection, *args, **kwargs) -> Container:
    return _run(self, *args, **kwargs | {"auto_remove": False})


def _wait_then_remove(self: Container, *args, **kwargs) -> dict:
    try:
        return _wait(self, *args, **kwargs)
    finally:
        self.remove(force=True)


PATCHES = ((ContainerCollection, "run", _run_kept), (Container, "wait", _wait_then_remove))


def install() -> None:
    for owner, name, patched in PATCHES:
        setattr(owner, name, patched)
