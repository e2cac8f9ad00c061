#!/usr/bin/env bash
# The GPU run for vision (one device call, after gpu-prep's three):
#   source .gpu/3/install.sh && bash bench/gpu_vision.sh     carry [".gpu/3", ".gpu/v"]
# .gpu/v holds the wheels the device image lacks for this run: mlx-vlm, what its server
# imports and openai (for the bench's client). gpu-prep wipes .gpu, so make it again with
#   pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .gpu/v \
#     mlx-vlm==0.7.10 mlx-audio==0.6.2 miniaudio python-multipart websockets cryptography \
#     cffi pycparser openai httpx2 httpcore2 jiter sniffio truststore
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/v/*.whl 2>&1 | grep -v -i warn || true
python3 -c "import mlx.core as mx, mlx_vlm; print('mlx', mx.__version__, 'mlx-vlm', mlx_vlm.__version__, mx.default_device())"
python3 bench/vision.py --make-random qwen2_5_vl_3b --out /tmp/vlm-3b --rounds 2 "$@"
