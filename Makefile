# Every target sets up what it needs: a fresh clone runs `make run` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= outputs

.PHONY: setup browser run test component-test pipeline-test bench bench-train compile ui lint lock clean

setup: $(STAMP)

# Pinned dependencies from requirements.lock, then the project itself (editable, no further resolution).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The MLflow UI test drives Debian's headless Chromium; install it where it is missing (root or sudo).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { echo "installing Debian's chromium for the browser test"; \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium >/dev/null; }

run: setup
	$(BIN)/crnn pipeline run --out $(OUT)

test: setup browser
	$(BIN)/python -m pytest -q

component-test: setup browser
	$(BIN)/python -m pytest -q -m component

pipeline-test: setup browser
	$(BIN)/python -m pytest -q -m pipeline

bench: setup bench-train
	$(BIN)/python bench/bench_convert.py --out $(OUT)/bench

bench-train: setup
	$(BIN)/python bench/bench_train.py --out $(OUT)/bench

compile: setup
	$(BIN)/crnn pipeline compile --out pipelines/crnn_pipeline.yaml

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(OUT))/mlflow/mlflow.db --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check .

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^crnn-pipeline' > requirements.lock

clean:
	rm -rf $(OUT) .pytest_cache
