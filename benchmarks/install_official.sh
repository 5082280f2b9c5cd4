#!/usr/bin/env bash
# Installs the official descript-audio-codec 1.0.0 in a venv of its own, for benchmarks/speed.py.
# Usage: benchmarks/install_official.sh [VENV_DIR]   (default ~/.cache/dacli/official/venv)
set -euo pipefail
VENV=${1:-$HOME/.cache/dacli/official/venv}
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q torch==2.13.0            # the CPU build on this machine's disk
# audiotools imports torchaudio; PyPI's build needs CUDA libraries, so keep only its Python code
# (benchmarks/official_phase.py swaps the slow pure-Python lfilter fallback for scipy's).
"$PIP" install -q --no-deps torchaudio==2.11.0
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
"$PIP" install -q --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
"$PIP" install -q torch==2.13.0 argbind einops numpy tqdm soundfile pyloudnorm scipy julius flatten-dict \
    rich importlib-resources randomname ffmpy tensorboard librosa
"$VENV/bin/python" -c "from dac.model import DAC; DAC()" && echo "official DAC installed in $VENV"
