#!/usr/bin/env bash
# Issue 3's GPU curve in one device call per shape (after gpu-prep's three set-up calls):
#   command "source .gpu/3/install.sh && bash bench/gpu_issue3.sh 1b"   carry [".gpu/3"]
#   command "source .gpu/3/install.sh && bash bench/gpu_issue3.sh 8b"   carry [".gpu/3"]
# 1b: ~6.5 min (6 rounds, raw against itself too); 8b: ~8.5 min (4 rounds). Both print the
# server's ratio to raw BatchGenerator per level, raw with the server's decode-mask rule, and
# the step trace's breakdown of every server wave; $OUT gets the JSON, the log and the traces.
set -euo pipefail
shape=${1:?usage: gpu_issue3.sh 1b|8b}
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-issue3}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader || true
case "$shape" in
  1b) extra=(--rounds 6 --aa) ;;
  8b) extra=(--rounds 4) ;;
  *) echo "unknown shape $shape" >&2; exit 2 ;;
esac
python3 bench/gpu_batching.py --shapes "$shape" --levels 1,2,4,8,16 --tokens 256 --trace --raw-nomask \
  --out "$out" "${extra[@]}" 2>&1 | grep -v " INFO " | tee "$out/log.txt"
