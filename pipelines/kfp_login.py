"""How ``crnn pipeline submit`` logs in to the KFP API, for as long as it waits on a run.

A multi-user Kubeflow wants a Kubernetes service-account token with the audience ``pipelines.kubeflow.org``.
Such tokens expire (an hour by default), so a fixed one fails a long ``--wait``. Three ways, in this order:

- ``--token`` / ``$KF_PIPELINES_TOKEN``: a fixed token, for short submissions and APIs without a login;
- ``--token-command``: a command that prints a token, run again before the one it gave expires (from a laptop:
  ``kubectl create token default-editor -n NS --audience pipelines.kubeflow.org --duration 1h``);
- ``--token-file``, or in a pod the token Kubernetes projects at ``KF_PIPELINES_SA_TOKEN_PATH``: read again on
  every request, as the kubelet rotates it (the kfp client's own ``ServiceAccountTokenVolumeCredentials``).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import Any

from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials
from kfp.client.token_credentials_base import TokenCredentialsBase

TOKEN_ENV = "KF_PIPELINES_TOKEN"
REFRESH_MARGIN_SECONDS = 300  # a token with less left than this is replaced before it is sent
UNKNOWN_LIFETIME_SECONDS = 600  # how long a token that says nothing of its expiry is used


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (a service-account token is one), unverified: only to know when to renew."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class CommandToken(TokenCredentialsBase):
    """A bearer token printed by ``command``, which is run again when the token is about to expire."""

    def __init__(self, command: str, clock: Callable[[], float] = time.time):
        self.command, self.clock = command, clock
        self.token, self.expires = "", 0.0

    def _renew(self) -> None:
        done = subprocess.run(shlex.split(self.command), capture_output=True, text=True, timeout=120)
        token = done.stdout.strip()
        if done.returncode != 0 or not token:
            raise RuntimeError(f"--token-command {self.command!r} gave no token (exit {done.returncode}): "
                               f"{done.stderr.strip()[-500:]}")
        self.token = token
        self.expires = token_expiry(token) or self.clock() + UNKNOWN_LIFETIME_SECONDS

    def refresh_api_key_hook(self, config: Any) -> None:
        if self.expires - self.clock() < REFRESH_MARGIN_SECONDS:
            self._renew()
        config.api_key["authorization"] = self.token


def login(token: str | None = None, token_command: str | None = None,
          token_file: str | None = None) -> dict[str, Any]:
    """The keyword arguments of ``kfp.Client`` that log in as asked (or as a pod can on its own)."""
    token = token or os.environ.get(TOKEN_ENV)
    if token:
        return {"existing_token": token}
    if token_command:
        return {"credentials": CommandToken(token_command)}
    in_pod = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
    path = token_file or (in_pod if os.path.isfile(in_pod) else None)
    return {"credentials": ServiceAccountTokenVolumeCredentials(path)} if path else {}
