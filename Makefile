# make install: create .venv with the CPU torch and dacli (editable; compiles the fused Snake kernel, dacli/_snake.c). make test: run the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test clean corpus eval-deps

install: $(STAMP)

$(STAMP): setup.cfg setup.py dacli/_snake.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,eval]'
	touch $(STAMP)

# ffmpeg (Debian's package) for the Opus and MP3 baselines of `dacli eval --codec`
eval-deps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends ffmpeg; \
	  else sudo apt-get update -q && sudo apt-get install -y -q --no-install-recommends ffmpeg; fi; }

test: install eval-deps
	$(BIN)/python -m pytest -q

# training and held-out sets of real recordings from Debian packages (not committed)
corpus: install
	$(BIN)/python -m dacli.corpus train data/train
	$(BIN)/python -m dacli.corpus heldout data/heldout

clean:
	rm -rf $(VENV) build *.egg-info dacli/*.so
