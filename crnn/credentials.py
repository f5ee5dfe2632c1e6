"""Credentials a pod receives as Kubernetes Secrets mounted as files, put where MLflow and boto3 look for them:
the environment.

The pipeline mounts its Secrets as optional volumes, not as environment variables: an optional Secret as
environment variables needs the kfp-kubernetes proto of KFP 2.15 or later (``SecretAsEnv.optional``), and a
required one fails every pod when the Secret is missing or lacks a key. An optional Secret volume is honoured
from KFP 2.2 on (docs/cluster.md#kfp-backends), and a key the Secret lacks is only a file that is not there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SECRETS_MOUNT = "/var/run/secrets/crnn"  # one folder per Secret: <mount>/<secret name>/<key>
SECRETS_ENV = "CRNN_SECRETS_DIR"  # another folder than SECRETS_MOUNT (tests)
# Only these keys become variables: a Secret cannot set PATH or LD_PRELOAD in the step's process.
CREDENTIAL_KEYS = frozenset({
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
})


def export_mounted_secrets(root: Path | None = None) -> list[str]:
    """Sets ``KEY`` from each ``<root>/<secret>/<KEY>`` file of a credential key, unless the environment has it
    already; returns the keys set. No folder, no Secret mounted: nothing to do."""
    root = Path(root or os.environ.get(SECRETS_ENV) or SECRETS_MOUNT)
    if not root.is_dir():
        return []
    exported = []
    # Secret volumes hold each key as a link into a hidden timestamped folder: is_file() follows it.
    for path in sorted(root.glob("*/*")):
        if path.name in CREDENTIAL_KEYS and path.is_file() and path.name not in os.environ:
            value = path.read_text().strip()
            if value:
                os.environ[path.name] = value
                exported.append(path.name)
    if exported:
        log.info("credentials from mounted Secrets: %s", ", ".join(exported))
    return exported
