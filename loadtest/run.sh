#!/usr/bin/env bash
# `make loadtest`: bounded headless load test against a server on 127.0.0.1; writes loadtest/report/<time>/.
# Arguments pass through, e.g. `bash loadtest/run.sh --scenarios search --users 1,8,32 --step-seconds 20`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${VENV:-.venv}/bin/python" -m loadtest.runner "$@"
