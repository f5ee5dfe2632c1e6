"""The container images, checked without Docker: hadolint, what the Dockerfiles copy and install, the user
they run as, the derived requirement files, and the `make images` commands."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crnn.cluster.targets import TARGETS as COMPILE_TARGETS
from crnn.cluster.targets import image
from crnn.lineage import COMMIT_ENV
from crnn.train.ascend.context import NPU_MISSING
from tools.lock import ascend_locks, closure, pinned_name, runtime_requirements, split

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("cpu", "gpu", "ascend")
HADOLINT = Path(sys.executable).parent / "hadolint"
LOCK, DEV_LOCK = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"
ASCEND_REQUIREMENTS = ROOT / "images" / "requirements-ascend.txt"
GPU_CONSTRAINTS = ROOT / "images" / "constraints-gpu.txt"
# The requirement file each image installs its dependencies from.
ASCEND_BASE_REQUIREMENTS = ROOT / "images" / "requirements-ascend-base.txt"
STANDIN = "localhost/crnn-base/ascend-tensorflow:2.6.5-py3.9"  # the Makefile's ASCEND_STANDIN
INSTALLS_FROM = {"cpu": LOCK, "gpu": LOCK, "ascend": ASCEND_REQUIREMENTS}


def dockerfile(target: str) -> Path:
    return ROOT / "images" / f"Dockerfile.{target}"


# --- a small Dockerfile reader -----------------------------------------------------------------------------------

def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, each list starting with its FROM; global ARGs before the first FROM are
    left out (see `global_args`)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def global_args(path: Path) -> dict[str, str]:
    defaults = {}
    for keyword, args in instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            defaults[name] = default
    return defaults


def base_images(path: Path) -> list[str]:
    """Every FROM's image with the global ARG defaults substituted, earlier stages (`FROM builder`) left out."""
    defaults, names, images = global_args(path), set(), []
    for stage in stages(path):
        words = stage[0][1].split()
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], words[0])
        if image not in names:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    return images


def context_sources(path: Path) -> list[str]:
    """What COPY and ADD take from the build context: neither `--from=` copies nor flags (--chown, --chmod...)."""
    sources = []
    for keyword, args in instructions(path):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue
        sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


def run_commands(path: Path) -> list[str]:
    """Each simple command of every RUN (split at &&, ||, ; and |)."""
    commands = []
    for keyword, args in instructions(path):
        if keyword == "RUN":
            commands.extend(c.strip() for c in re.split(r"&&|\|\||;|\|", args) if c.strip())
    return commands


def is_pinned(image: str) -> bool:
    """A digest, or a tag naming a release (major.minor.patch...), not a moving tag such as 3.11 or latest."""
    if "@sha256:" in image:
        return True
    name_and_tag = image.rsplit("/", 1)[-1]
    tag = name_and_tag.partition(":")[2]
    return tag != "latest" and re.search(r"\d+\.\d+\.\w+", tag) is not None


# --- .dockerignore ------------------------------------------------------------------------------------------------

def _pattern(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (Go's filepath.Match plus `**`) as a regular expression on slash paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        rules.append((include, _pattern(os.path.normpath(line.lstrip("!")).strip("/"))))
    return rules


def is_ignored(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for include, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            ignored = not include
    return ignored


# --- hadolint -----------------------------------------------------------------------------------------------------

def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    # Our own config and no HADOLINT_* variables: a personal ~/.hadolint.yaml must not relax the check.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run([str(HADOLINT), "--config", str(config), "--failure-threshold", "style", "--no-color",
                           str(path)], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("target", [*TARGETS, "ascend-base"])
def test_dockerfile_passes_hadolint(target, tmp_path):
    result = hadolint(dockerfile(target), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("rule", "body"), [
    ("DL3008", "RUN apt-get update && apt-get install -y --no-install-recommends curl "
               "&& rm -rf /var/lib/apt/lists/*\nUSER 1000:1000"),
    ("DL3002", "USER root"),
    ("DL3042", "RUN pip install requests==2.33.0\nUSER 1000:1000"),
])
def test_hadolint_fails_on_a_violation(rule, body, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(f"FROM python:3.11.7-slim-bookworm\n{body}\n")
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0 and rule in result.stdout, result.stdout + result.stderr


# --- what the images copy and install -----------------------------------------------------------------------------

WRITTEN_BY_MAKE = {".build-commit"}  # the image's commit, which invalidates its last layer (images/Dockerfile.cpu)


@pytest.mark.parametrize("target", TARGETS)
def test_copied_files_exist_and_are_not_dockerignored(target):
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    sources = context_sources(dockerfile(target))
    assert sources
    for source in sources:
        if source in WRITTEN_BY_MAKE:  # not in a fresh clone: `make images` writes it before building
            assert f"> {source}" in (ROOT / "Makefile").read_text() and not is_ignored(rules, source)
            continue
        assert (ROOT / source).exists(), f"{target}: COPY {source}: not in the repository"
        tracked = subprocess.run(["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
        for path in [source, *tracked]:  # a folder: every tracked file in it must reach the image too
            assert not is_ignored(rules, path), f"{target}: COPY {source}: .dockerignore excludes {path}"


def test_dockerignore_matching():
    rules = dockerignore_rules("data\n**/__pycache__\n*.db\ntests\n!tests/keep.txt\n")
    assert is_ignored(rules, "data/raw/a.tar.gz")
    assert not is_ignored(rules, "crnn/data/catalog.json")
    assert is_ignored(rules, "crnn/model/__pycache__/network.cpython-311.pyc")
    assert is_ignored(rules, "mlflow.db") and not is_ignored(rules, "crnn/x.db")
    assert is_ignored(rules, "tests/test_dockerfiles.py") and not is_ignored(rules, "tests/keep.txt")


def test_dockerignore_keeps_local_state_out():
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text())
    for path in (".venv/bin/python", "outputs/mlflow/mlflow.db", ".git/HEAD", "tests/test_dockerfiles.py",
                 "bench/bench_train.py", "crnn/__pycache__/cli.cpython-311.pyc", "crnn_pipeline.egg-info/PKG-INFO"):
        assert is_ignored(rules, path), path


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_crnn_as_a_non_root_user(target):
    final = stages(dockerfile(target))[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), f"{target}: last USER is {users[-1:]}"
    assert int(users[-1].split(":")[0]) != 0
    # No entry point: it would take a KFP component's `sh -c ...` command line as its arguments.
    assert not [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert [json.loads(args) for keyword, args in final if keyword == "CMD"][-1:] == [["crnn", "--help"]]
    envs = " ".join(args for keyword, args in final if keyword == "ENV")
    assert re.search(r"\bHOME=/\S+", envs), f"{target}: no HOME"


@pytest.mark.parametrize("target", TARGETS)
def test_image_pins_its_base_images(target):
    images = base_images(dockerfile(target))
    assert images
    for base in images:
        assert is_pinned(base), f"{target}: FROM {base} is not pinned"


def test_pinned_base_image_rule():
    assert is_pinned("python:3.11.7-slim-bookworm")
    assert is_pinned("swr.cn-south-1.myhuaweicloud.com/ascendhub/ascend-tensorflow:24.0.RC1-A1-ubuntu20.04")
    assert is_pinned("python@sha256:" + "0" * 64)
    for moving in ("python", "python:latest", "python:3.11-slim", "registry:5000/python", "ubuntu:jammy"):
        assert not is_pinned(moving), moving


@pytest.mark.parametrize("target", TARGETS)
def test_pip_never_keeps_its_cache(target):
    pip_runs = [c for c in run_commands(dockerfile(target)) if re.search(r"\bpip3? (install|wheel)\b", c)]
    assert pip_runs
    for command in pip_runs:
        assert "--no-cache-dir" in command.split(), command


@pytest.mark.parametrize("target", TARGETS)
def test_image_installs_the_pinned_requirements_then_the_project_once(target):
    path = dockerfile(target)
    expected = INSTALLS_FROM[target]
    assert str(expected.relative_to(ROOT)) in context_sources(path)
    commands = run_commands(path)
    requirement_files = [Path(m.group(1)).name for c in commands
                         for m in re.finditer(r"\bpip install .*?-r (\S+)", c)]
    assert requirement_files == [expected.name], requirement_files
    # Components run `python -m kfp...` in the cpu and gpu images, and the KFP launcher needs the same kfp; the
    # ascend image runs an AscendJob's training processes only.
    assert bool(re.search(r"^kfp==2\.17\.0$", expected.read_text(), re.MULTILINE)) == (target != "ascend")
    # The project: once, from a wheel built in an earlier stage, without resolving anything again.
    final = " ".join(args for keyword, args in stages(path)[-1] if keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir --no-deps \S+\.whl", final)
    assert len(re.findall(r"pip install [^&;]*\.whl", " ".join(commands))) == 1
    assert not [c for c in commands if re.search(r"pip install [^&;]*(-e|\s)\.(\s|$)", c)]


@pytest.mark.parametrize("target", TARGETS)
def test_image_records_its_commit(target):
    final = stages(dockerfile(target))[-1]
    assert ("ARG", "GIT_COMMIT=unknown") in final
    assert ("ENV", f"{COMMIT_ENV}=${{GIT_COMMIT}}") in final


def test_accelerator_settings():
    gpu = dockerfile("gpu").read_text()
    assert "NVIDIA_VISIBLE_DEVICES=all" in gpu and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in gpu
    assert '"tensorflow[and-cuda]==2.21.0"' in gpu and "-c /tmp/constraints-gpu.txt" in gpu
    ascend = " ".join(args for keyword, args in stages(dockerfile("ascend"))[-1] if keyword == "ENV")
    for name in ("ASCEND_HOME", "ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH", "LD_LIBRARY_PATH", "PYTHONPATH"):
        assert re.search(rf"\b{name}=", ascend), name


# --- the locks, and the files derived from them ------------------------------------------------------------------

def test_the_runtime_lock_holds_what_the_project_needs_and_no_development_tool():
    """The images install requirements.lock: exactly what the project's dependencies pull in. Test runners,
    linters and moto are pinned in requirements-dev.lock, which only `make setup` installs."""
    runtime, dev = _requirement_lines(LOCK), _requirement_lines(DEV_LOCK)
    needed = closure(runtime_requirements())
    assert {pinned_name(line) for line in runtime} == needed & {pinned_name(line) for line in runtime + dev}
    assert not {pinned_name(line) for line in dev} & needed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_tools = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert dev_tools <= {pinned_name(line) for line in dev}, "every development tool is pinned, apart"
    assert split(runtime + dev, needed) == (runtime, dev), "regenerate both locks with `make lock`"


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_ascend_image_adds_to_its_base_without_replacing_tensorflows_own_pins():
    """images/requirements-ascend.txt is what a resolution of the library's needs on Python 3.9 adds to the
    stand-in's TensorFlow 2.6.5 (make lock-ascend); none of TensorFlow's own requirements changes there (the
    build's pip check confirms the whole set, on a real Ascend base too)."""
    base, added = _requirement_lines(ASCEND_BASE_REQUIREMENTS), _requirement_lines(ASCEND_REQUIREMENTS)
    assert ascend_locks(base, base + added) == (base, added)
    assert "tensorflow-cpu==2.6.5" in base and "keras==2.6.0" in base and "protobuf==3.19.0" in base
    tensorflows_own = {"tensorflow-cpu", "keras", "numpy", "protobuf", "h5py", "six", "typing-extensions", "wrapt",
                       "absl-py", "grpcio", "tensorboard", "tensorflow-estimator", "gast", "flatbuffers"}
    assert not {pinned_name(line) for line in added} & tensorflows_own
    assert {"mlflow-skinny", "opencv-python-headless", "boto3", "lmdb"} <= {pinned_name(line) for line in added}


def test_gpu_constraints_pin_every_cuda_wheel_of_tensorflow():
    requires = importlib.metadata.distribution("tensorflow").requires or []
    cuda = {canonicalize_name(r.name): r.specifier for r in map(Requirement, requires)
            if r.marker is not None and r.marker.evaluate({"extra": "and-cuda"})
            and not r.marker.evaluate({"extra": ""})}
    assert importlib.metadata.version("tensorflow") == "2.21.0" and cuda
    pins = {}
    for line in _requirement_lines(GPU_CONSTRAINTS):
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    assert pins.keys() == cuda.keys()
    for name, version in pins.items():
        assert cuda[name].contains(version), f"{name}=={version} is outside tensorflow's {cuda[name]}"


# --- make images --------------------------------------------------------------------------------------------------

def _make_plan(*overrides: str, goal: str = "images") -> list[str]:
    """What ``make -n`` would run, set-up steps included."""
    # Under `make test` the outer make's variables would make this one announce its directory.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", goal, *overrides], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True, env=env)
    return result.stdout.splitlines()


def _make_images(*overrides: str) -> list[str]:
    """The image builds of ``make images``, with docker unless an override says otherwise."""
    plan = _make_plan("CONTAINER_TOOL=docker", *overrides)
    return [line for line in plan if " build -f images/Dockerfile." in line and "Dockerfile.ascend-base" not in line]


def test_make_images_builds_every_target_with_its_tag():
    lines = _make_images("REGISTRY=r.example", "TAG=9")
    assert len(lines) == len(TARGETS)
    for line, target in zip(lines, TARGETS, strict=True):
        base = re.escape(f"--build-arg ASCEND_BASE={STANDIN} ") if target == "ascend" else ""
        pattern = (rf"DOCKER_BUILDKIT=1 docker build -f images/Dockerfile\.{target} "
                   rf"--build-arg GIT_COMMIT=([0-9a-f]{{40}}(-dirty)?|unknown) {base}-t r\.example/{target}:9 \.")
        assert re.fullmatch(pattern, line), line


def test_ascend_base_goes_to_the_ascend_build_only():
    lines = _make_images("ASCEND_BASE=base.example/cann-tf:py311")
    assert [("--build-arg ASCEND_BASE=base.example/cann-tf:py311" in line) for line in lines] == [
        target == "ascend" for target in TARGETS]


def test_debian_bases_are_made_first_and_given_to_the_python_images():
    plan = _make_plan("CONTAINER_TOOL=docker", "BASES=debian")
    base = next(i for i, line in enumerate(plan) if "mmdebstrap" in line)
    builds = [i for i, line in enumerate(plan) if " build -f images/Dockerfile." in line]
    assert base < builds[0]
    debian = "--build-arg PYTHON_IMAGE=localhost/crnn-base/python:3.11-bookworm"
    targets = [target for target in TARGETS if any(f"Dockerfile.{target} " in plan[i] for i in builds)]
    assert targets == list(TARGETS)
    # The ascend image's builder stage (our wheel) is on the cpu image's base too.
    assert all(debian in plan[i] for i in builds if "Dockerfile.ascend-base" not in plan[i])
    assert not [line for line in _make_images() if "PYTHON_IMAGE" in line]  # BASES=registry: the Dockerfiles' own


def test_without_ascend_base_the_ascend_image_builds_on_the_bullseye_stand_in():
    plan = _make_plan("CONTAINER_TOOL=docker")
    bullseye = next(i for i, line in enumerate(plan) if "mmdebstrap" in line and " bullseye " in line)
    standin = next(i for i, line in enumerate(plan) if "build -f images/Dockerfile.ascend-base" in line)
    ascend = next(i for i, line in enumerate(plan) if "build -f images/Dockerfile.ascend " in line)
    assert bullseye < standin < ascend
    assert "python3,python3-pip" in plan[bullseye]  # Debian's own Python 3.9 and pip
    assert "-t localhost/crnn-base/ascend-tensorflow:2.6.5-py3.9" in " ".join(plan[standin:standin + 2])
    assert "--build-arg ASCEND_BASE=localhost/crnn-base/ascend-tensorflow:2.6.5-py3.9" in plan[ascend]
    given = _make_plan("CONTAINER_TOOL=docker", "ASCEND_BASE=swr.example/ascend-tensorflow:24.0.RC1")
    assert not [line for line in given if "Dockerfile.ascend-base" in line or " bullseye " in line]
    assert "--build-arg ASCEND_BASE=swr.example/ascend-tensorflow:24.0.RC1" in given[-1]


def test_image_builds_install_from_a_wheelhouse_made_by_the_hosts_pip():
    plan = _make_plan("CONTAINER_TOOL=docker", "-W", "requirements.lock")  # as if the lock had changed
    wheels = [line for line in plan if " -m pip wheel " in line]
    assert any("-r requirements.lock" in line for line in wheels)
    assert any("-r images/constraints-gpu.txt" in line for line in wheels)  # the gpu image's CUDA wheels
    assert max(plan.index(line) for line in wheels) < min(plan.index(line) for line in _make_images())
    for target in ("cpu", "gpu"):
        installs = [c for c in run_commands(dockerfile(target)) if re.search(r"\bpip3? install\b", c)]
        assert installs and all("--no-index --find-links /wheelhouse" in c for c in installs[:-1]), installs


def test_podman_runs_with_our_configuration():
    for line in _make_images("CONTAINER_TOOL=podman"):
        assert re.match(r"CONTAINERS_CONF=\S+/containers\.conf podman build ", line), line


def test_without_a_docker_engine_the_container_test_sets_up_podman(tmp_path):
    """docker's command with no engine behind it, and no podman yet: container-setup installs and uses podman
    (images/containers.sh), rather than stop at docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "CONTAINER_TOOL")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    plan = subprocess.run(["make", "--no-print-directory", "-n", "container-setup"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True, env=env).stdout
    assert re.search(r"images/containers\.sh setup podman \S+/containers\.conf", plan), plan


def test_default_image_names_are_the_ones_the_code_uses():
    tags = [line.split(" -t ")[1].split()[0] for line in _make_images()]
    assert tags == [image(t) for t in TARGETS]
    assert {t.image for t in COMPILE_TARGETS.values()} <= set(TARGETS)  # every image a pipeline names is built
    assert f"{image('ascend').partition(':')[0]} image (images/Dockerfile.ascend)" in NPU_MISSING
