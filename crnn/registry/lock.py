"""A lock over a registered model's aliases, made of the registry itself.

Two pipelines finishing together would each read the champion, each decide, and the later alias would win
whatever the gate said. MLflow has no transactions, but creating a registered model is atomic: the name is
unique. So ``<model>.gate-lock`` exists while one process decides; another waits for it to go. A lock left by
a process that died expires after ``stale_seconds`` (its creation time is on it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def registry_lock(client, model_name: str, timeout_seconds: float = 600, stale_seconds: float = 300,
                  poll_seconds: float = 0.5) -> Iterator[None]:
    """Holds ``<model_name>.gate-lock`` meanwhile; raises ``TimeoutError`` if it cannot be had in time."""
    from mlflow.exceptions import MlflowException

    name = f"{model_name}.gate-lock"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            client.create_registered_model(name, tags={"holder": holder}, description="held while a gate decides")
            break
        except MlflowException as error:
            # RESOURCE_DOES_NOT_EXIST: the SQL store lost the insert race, then looked the lock up to report
            # it, and its holder had released it meanwhile (seen with four threads). Either way: try again.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(client, name, stale_seconds)
        if time.monotonic() > deadline:
            raise TimeoutError(f"registry lock {name} still held after {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        client.delete_registered_model(name)


def _break_if_stale(client, name: str, stale_seconds: float) -> None:
    from mlflow.exceptions import MlflowException

    try:
        lock = client.get_registered_model(name)
    except MlflowException:  # released meanwhile
        return
    age = time.time() - lock.creation_timestamp / 1000
    if age > stale_seconds:
        log.warning("breaking registry lock %s held by %s for %.0f s", name, lock.tags.get("holder"), age)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)
