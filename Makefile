# Every target sets up what it needs: a fresh clone runs `make run` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= outputs
# Images: $(REGISTRY)/<target>:$(TAG), one per target (images/Dockerfile.<target>). The defaults are those of
# crnn/cluster/targets.py (DEFAULT_REGISTRY, DEFAULT_TAG), the names the pipeline's images have unless told.
REGISTRY ?= crnn-pipeline
TAG      ?= 0.1.0
TARGETS  ?= cpu gpu ascend

.PHONY: container-setup container-test base-images ascend-base lock-ascend wheelhouse setup browser run test component-test pipeline-test review-screenshots bench bench-train compile ui lint lock clean images images-lint manifests-validate reliability

setup: $(STAMP)

# Pinned dependencies (requirements.lock: run time, what the images install; requirements-dev.lock: tests and
# linters), then the project itself (editable, no further resolution).
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The MLflow review test drives Debian's headless Chromium (through Playwright); install it where it is missing
# (root or sudo). If that fails the other tests still run, and the review test fails saying what is missing.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { echo "installing Debian's chromium for the review test"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium >/dev/null; } || \
	  echo "could not install chromium: tests/test_mlflow_review.py will fail"

run: setup
	$(BIN)/crnn pipeline run --out $(OUT)

# Two pytest workers (pytest-xdist): many tests wait on servers and subprocesses, so a second one fills the idle
# core (docs/performance.md has the figures). TEST_WORKERS=0 runs them in this process. Each worker makes
# its own session fixtures, the tracked pipeline included: xdist 3.8 groups tests by rewriting item._nodeid, which
# pytest 9 no longer reads, so --dist loadgroup cannot keep them on one worker.
TEST_WORKERS ?= 2

test: setup browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The pipeline with every task in a container of the cpu image (kfp.local's DockerRunner), and the ascend image
# (on its stand-in base) training, resuming and exporting, after building both.
# Without a Docker engine: podman, on the Debian base (no registry needed). The image's name as the engine
# lists it: podman files a short name under localhost/.
CONTAINER_BASES ?= $(if $(filter podman,$(CONTAINER_TOOL)),debian,registry)
container-test: setup
	$(MAKE) --no-print-directory images TARGETS="cpu ascend" BASES=$(CONTAINER_BASES) CONTAINER_TOOL=$(CONTAINER_TOOL)
	CONTAINERS_CONF=$(CONTAINERS_CONF) CRNN_CONTAINER_TOOL=$(CONTAINER_TOOL) CRNN_IMAGE_BASES=$(CONTAINER_BASES) \
	  CRNN_LOCAL_IMAGE=$(if $(filter podman,$(CONTAINER_TOOL)),localhost/)$(REGISTRY)/cpu:$(TAG) \
	  CRNN_ASCEND_IMAGE=$(if $(filter podman,$(CONTAINER_TOOL)),localhost/)$(REGISTRY)/ascend:$(TAG) \
	  $(BIN)/python -m pytest -q -m container tests/container

component-test: setup browser
	$(BIN)/python -m pytest -q -m component

# Faults and hostile input, each recorded with its outcome; docs/reliability.md's table is written from the records.
reliability: setup browser
	rm -f $(OUT)/reliability/results.json
	CRNN_RELIABILITY_OUT=$(abspath $(OUT))/reliability/results.json $(BIN)/python -m pytest -q -m reliability
	$(BIN)/python -m tools.reliability_table $(OUT)/reliability/results.json

pipeline-test: setup browser
	$(BIN)/python -m pytest -q -m pipeline

# The review test's screenshots of the runs table and of the model version, for the README (docs/images/).
review-screenshots: setup browser
	CRNN_TEST_ARTIFACTS=$(abspath $(OUT))/test-artifacts $(BIN)/python -m pytest -q tests/test_mlflow_review.py
	mkdir -p docs/images
	cp $(OUT)/test-artifacts/mlflow-review/runs-table.png docs/images/mlflow-runs-table.png
	cp $(OUT)/test-artifacts/mlflow-review/model-version.png docs/images/mlflow-model-version.png

bench: setup bench-train
	$(BIN)/python bench/bench_convert.py --out $(OUT)/bench
	$(BIN)/python bench/bench_listing.py --out $(OUT)/bench
	$(BIN)/python bench/bench_render.py --out $(OUT)/bench

bench-train: setup
	$(BIN)/python bench/bench_train.py --out $(OUT)/bench
	$(BIN)/python bench/bench_step_variants.py --out $(OUT)/bench

# The compiled pipelines are committed; tests/test_compile.py fails when they are out of date with the code.
compile: setup
	$(foreach t,cpu gpu ascend,$(BIN)/crnn pipeline compile --target $(t) --registry $(REGISTRY) --tag $(TAG)$(newline))
	$(foreach t,gpu ascend,$(BIN)/crnn pipeline compile --target $(t) --nodes 2 --registry $(REGISTRY) --tag $(TAG) \
	  --out pipelines/compiled/$(t)-2-nodes.yaml$(newline))

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(OUT))/mlflow/mlflow.db --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check .

manifests-validate: setup
	$(BIN)/python -m tools.validate_manifests

# The virtualenv's pins, split into run time and development (tools/lock.py). Frozen to a temporary file
# first: a failing pip must not leave an empty lock behind.
lock: setup
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^crnn-pipeline' > requirements.frozen.tmp
	$(BIN)/python -m tools.lock requirements.frozen.tmp
	rm requirements.frozen.tmp

# The ascend image's pins, resolved by pip on the stand-in's Python 3.9 (images/requirements-ascend*.txt say what
# each holds). Needs the package index from inside a container; PIP_CERT, where the host's pip needs one.
ASCEND_LIBRARY_NEEDS = "mlflow-skinny<3" "opencv-python-headless<4.7" lmdb boto3 pyyaml requests defusedxml tqdm \
  google-crc32c scipy pillow psutil
lock-ascend: setup ascend-base
	mkdir -p $(OUT)/lock-ascend
	$(CONTAINER) run --rm -e PIP_DISABLE_PIP_VERSION_CHECK=1 -v $(abspath $(OUT))/lock-ascend:/out $(if $(PIP_CERT),-e PIP_CERT=/cert.pem \
	  -v $(PIP_CERT):/cert.pem:ro) $(BULLSEYE_PYTHON_IMAGE) sh -ec '\
	  python3 -m pip install --quiet --upgrade pip==24.3.1; \
	  python3 -m pip install --quiet --ignore-installed --dry-run --report /out/base.json tensorflow-cpu==2.6.5 protobuf==3.19.0; \
	  python3 -m pip install --quiet --ignore-installed --dry-run --report /out/full.json tensorflow-cpu==2.6.5 \
	    protobuf==3.19.0 $(ASCEND_LIBRARY_NEEDS)'
	$(BIN)/python -m tools.lock --ascend $(OUT)/lock-ascend/base.json $(OUT)/lock-ascend/full.json

# The commit goes into the image (CRNN_GIT_COMMIT), as there is no .git inside; "-dirty", as crnn/lineage.py
# writes it, when tracked files differ from it, since the image then holds code no commit has.
GIT_HEAD   = $(shell git rev-parse HEAD 2>/dev/null)
GIT_COMMIT = $(if $(GIT_HEAD),$(GIT_HEAD)$(shell git diff --quiet HEAD -- || echo -dirty),unknown)
define newline


endef

# docker, or podman where no Docker engine answers (CONTAINER_TOOL= to choose): container-setup installs it
# where it is missing, as on a machine with docker's command but no engine. Podman runs with a configuration
# of ours (images/containers.sh): the runc runtime, and limits this machine lets a container set.
# Looked up once, when first used (not at every make).
CONTAINER_TOOL ?= $(eval CONTAINER_TOOL := $$(shell docker info >/dev/null 2>&1 && echo docker || echo podman))$(CONTAINER_TOOL)
CONTAINERS_CONF := $(abspath $(OUT))/containers/containers.conf
# BuildKit for docker: the builds bind-mount the wheelhouse (RUN --mount), which the legacy builder lacks.
CONTAINER = $(if $(filter podman,$(CONTAINER_TOOL)),CONTAINERS_CONF=$(CONTAINERS_CONF) podman,$(if \
  $(filter docker,$(CONTAINER_TOOL)),DOCKER_BUILDKIT=1 docker,$(CONTAINER_TOOL)))

# Python base: BASES=registry takes the Dockerfiles' own (python:3.11.7-slim-bookworm); BASES=debian makes an
# equivalent from Debian bookworm's packages first (make base-images), for machines that reach no registry.
BASES ?= registry
DEBIAN_PYTHON_IMAGE := localhost/crnn-base/python:3.11-bookworm

# The wheels of the pinned dependencies, made on this machine by its own pip (its index, proxy and certificates):
# the image builds install them without an index. Made for this machine's platform: build the images on Linux
# of the images' architecture. The Makefile is a prerequisite for the pip and setuptools pins written here.
WHEELHOUSE := .wheelhouse
IMAGE_WHEELS := $(foreach t,$(filter cpu gpu,$(TARGETS)),$(WHEELHOUSE)/.$(t))
# The ascend image: Python 3.9 wheels (images/requirements-ascend*.txt) fetched by the host's pip for the images'
# CPU architecture, and the cpu wheelhouse's pip and setuptools, which build our package's wheel.
WHEELHOUSE_ASCEND := .wheelhouse-ascend
IMAGE_WHEELS += $(if $(filter ascend,$(TARGETS)),$(WHEELHOUSE)/.cpu $(WHEELHOUSE_ASCEND)/.ascend)
PY39_PLATFORMS = $(foreach p,manylinux1 manylinux2010 manylinux2014 manylinux_2_28,--platform $(p)_$(shell uname -m))

container-setup:
	@bash images/containers.sh setup $(CONTAINER_TOOL) $(CONTAINERS_CONF)

base-images: container-setup
	@bash images/containers.sh install mmdebstrap:mmdebstrap
	$(CONTAINER) image inspect $(DEBIAN_PYTHON_IMAGE) >/dev/null 2>&1 || \
	  { mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates bookworm - \
	    | $(CONTAINER) import --change 'CMD ["python3"]' - $(DEBIAN_PYTHON_IMAGE); }

$(WHEELHOUSE)/.cpu: requirements.lock Makefile | setup
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) -r requirements.lock pip==26.3 setuptools==80.9.0
	touch $@

$(WHEELHOUSE)/.gpu: requirements.lock images/constraints-gpu.txt $(WHEELHOUSE)/.cpu
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE) -r images/constraints-gpu.txt
	touch $@

# --no-deps: the lines are exact pins already, and pip then takes the three of TensorFlow 2.6.5's that exist only
# as sources (the image's setuptools builds them).
$(WHEELHOUSE_ASCEND)/.ascend: images/requirements-ascend-base.txt images/requirements-ascend.txt | setup
	$(foreach r,$^,$(BIN)/python -m pip download --quiet --no-deps --python-version 3.9 --implementation cp \
	  $(PY39_PLATFORMS) --dest $(WHEELHOUSE_ASCEND) -r $(r)$(newline))
	touch $@

wheelhouse: $(IMAGE_WHEELS)

# ASCEND_BASE: Ascend's TensorFlow image the ascend image builds on (see images/Dockerfile.ascend). Without one,
# the stand-in: TensorFlow 2.6.5 as Ascend installs it, on Debian bullseye's Python 3.9 (made from Debian's
# packages, whatever BASES says: no registry image is Debian's own Python 3.9), without CANN.
ASCEND_STANDIN := localhost/crnn-base/ascend-tensorflow:2.6.5-py3.9
BULLSEYE_PYTHON_IMAGE := localhost/crnn-base/python:3.9-bullseye

ascend-base: container-setup $(WHEELHOUSE_ASCEND)/.ascend
	@bash images/containers.sh install mmdebstrap:mmdebstrap
	$(CONTAINER) image inspect $(BULLSEYE_PYTHON_IMAGE) >/dev/null 2>&1 || \
	  { mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,ca-certificates bullseye - \
	    | $(CONTAINER) import --change 'CMD ["python3"]' - $(BULLSEYE_PYTHON_IMAGE); }
	$(CONTAINER) build -f images/Dockerfile.ascend-base --build-arg BULLSEYE_IMAGE=$(BULLSEYE_PYTHON_IMAGE) \
	  -t $(ASCEND_STANDIN) .

define build_image
$(CONTAINER) build -f images/Dockerfile.$(1) --build-arg GIT_COMMIT=$(GIT_COMMIT) $(if $(filter debian,$(BASES)),--build-arg PYTHON_IMAGE=$(DEBIAN_PYTHON_IMAGE) )$(if $(filter ascend,$(1)),--build-arg ASCEND_BASE=$(or $(ASCEND_BASE),$(ASCEND_STANDIN)) )-t $(REGISTRY)/$(1):$(TAG) .
endef

images: container-setup $(IMAGE_WHEELS) $(if $(filter debian,$(BASES)),base-images) \
  $(if $(ASCEND_BASE),,$(if $(filter ascend,$(TARGETS)),ascend-base))
	@echo '$(GIT_COMMIT)' | cmp -s - .build-commit || echo '$(GIT_COMMIT)' > .build-commit
	$(foreach t,$(TARGETS),$(call build_image,$(t))$(newline))

images-lint: setup
	$(BIN)/hadolint --failure-threshold style $(foreach t,$(TARGETS),images/Dockerfile.$(t)) \
	  $(if $(filter ascend,$(TARGETS)),images/Dockerfile.ascend-base)

clean:
	rm -rf $(OUT) .pytest_cache
