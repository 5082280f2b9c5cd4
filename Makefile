# make install: create .venv with the CPU torch and dacli (editable; compiles the fused Snake kernel, dacli/_snake.c). make test: the whole test suite; make test-quick: all but the slow system tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-quick lint clean corpus eval-deps web-deps web web-serve train train-stop fuzz slurm-check

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml dacli/_snake.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,eval,lint,ray,parquet,onnx]'
	touch $(STAMP)

# ffmpeg (Debian's package) for the Opus and MP3 baselines of `dacli eval --codec`
eval-deps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg; \
	  else sudo apt-get update -q && sudo apt-get install -y -q --no-install-recommends ffmpeg; fi; }

# Debian's Chromium for the browser tests of the player (Playwright drives it; its own browser download is
# not used)
web-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	  else sudo apt-get update -q && sudo apt-get install -y -q --no-install-recommends chromium; fi; }

# the .dac player (web/): npm packages as package-lock.json pins them, copied into web/vendor/, and the
# bundled model's ONNX graphs exported into web/model/
web: install web/vendor/.built web/model/dacli-onnx.json

web/vendor/.built: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	rm -rf web/vendor && mkdir -p web/vendor
	cp web/node_modules/onnxruntime-web/dist/ort.min.mjs web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded*.mjs \
	   web/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded*.wasm web/vendor/
	cp web/node_modules/fzstd/esm/index.mjs web/vendor/fzstd.mjs
	touch $@

web/model/dacli-onnx.json: weights/dacli_44khz_7.75kbps.pth dacli/export.py dacli/graphs.py $(STAMP)
	$(BIN)/dacli export dacli-44khz -o web/model --overwrite

# the player on http://127.0.0.1:8000/ (static files, cross-origin isolated: decoding on several threads)
web-serve: web
	$(BIN)/python web/serve.py 8000

# every test; none is skipped
test: install eval-deps web-deps web
	$(BIN)/python -m pytest -q

# the loop between edits: everything but the system tests marked slow (the wheel, Ray clusters, the
# fuzzer, memory in fresh processes), a few minutes on 2 cores
test-quick: install eval-deps web-deps web
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (pyflakes and pycodestyle rules, pyproject.toml) on everything; mypy on the public modules (setup.cfg)
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The long fuzz run of the .dac readers (make test runs a short one): 10^6 coverage-guided inputs, then
# 10^6 random mutations checked for silent corruption. Findings are written as crash-*/oom-*/timeout-*.
FUZZ_RUNS ?= 1000000
fuzz: install
	$(BIN)/python tests/fuzz_readers.py -runs=$(FUZZ_RUNS)
	$(BIN)/python tests/fuzz_readers.py --mutate $(FUZZ_RUNS)

# the README's Slurm job-array line on a Slurm cluster started on this machine (as root; installs slurm-wlm and munge)
slurm-check: install
	bash scripts/slurm-local.sh

# training and held-out sets of real recordings from Debian packages (not committed)
corpus: install
	$(BIN)/python -m dacli.training.corpus train data/train
	$(BIN)/python -m dacli.training.corpus heldout data/heldout

# Continue training the bundled model in the background (log: data/runs/bundled/train.log). Resumes from
# the run folder's full state when this machine has one, else from the run's committed checkpoint
# (weights/run/latest.pth and the training state beside it, latest.train.pt; the bundled weights when
# there is none), or from this run's last export if that is further;
# builds the training corpus first if it is missing or was built from an older definition. GOMP_SPINCOUNT=1000: on a machine with
# other load, torch's OpenMP threads spinning at barriers while their partner is descheduled made steps
# take 20-60 s instead of 4 s (2 cores, measured while tests and a fuzzer ran).
RUN := data/runs/bundled
# the run's own committed checkpoint (weights/run/) when there is one, else the bundled weights
WEIGHTS := $(firstword $(wildcard weights/run/latest.pth) weights/dacli_44khz_7.75kbps.pth)
train: install
	$(BIN)/python -m dacli.training.corpus check train data/train || { rm -rf data/train && $(BIN)/python -m dacli.training.corpus train data/train; }
	mkdir -p $(RUN)
	GOMP_SPINCOUNT=1000 nohup nice -n 10 $(BIN)/python -m dacli.training --data data/train --run $(RUN) --init $(WEIGHTS) \
	  >> $(RUN)/train.log 2>&1 & echo $$! > $(RUN)/pid
	@echo "training in the background (pid $$(cat $(RUN)/pid)); tail -f $(RUN)/train.log"

train-stop:
	-kill $$(cat $(RUN)/pid)

clean:
	rm -rf $(VENV) build dist *.egg-info dacli/*.so
