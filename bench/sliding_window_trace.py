"""The agentic trace (bench/agent_trace.py: rotating long system prompts, new questions, growing
conversations) on a sliding-window model next to a full-attention one.

    .venv/bin/python bench/sliding_window_trace.py [--system-tokens 1000] [--rounds 3]

The sliding-window model is a random Gemma 3 of Gemma 3 270M's shape (18 layers, hidden 640,
head_dim 256, window 512, one global layer in six) saved as a GGUF without a chat template,
with the tests' byte-level vocabulary (about a token a character, so its system prompts are
written shorter to reach the same token count). The full-attention model is SmolLM2-135M.

Reported per model: the system prompt's tokens (to its boundary), the share of them that the
new questions over a known system prompt (rounds after the first) had cached, and the mean
time to first token of those hits against the same requests on a server without a cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import agent_trace

GEMMA_270M_SHAPE = {
    "hidden_size": 640, "num_hidden_layers": 18, "intermediate_size": 2048,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
    "max_position_embeddings": 32768,
}  # fmt: skip


def build_gemma(tmp: Path) -> Path:
    from tests.unit.test_gguf_builders import write_tiny_gemma3

    return write_tiny_gemma3(tmp, window=512, **GEMMA_270M_SHAPE)


def measure(path: str, system_tokens: int, rounds: int, turns: int) -> dict:
    from mlx_textgen.api.protocol import ChatCompletionRequest
    from mlx_textgen.api.routes.chat import _render
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.loader import prepare
    from tests.e2e.server import ServerProcess

    cache = Path(tempfile.mkdtemp(prefix="bench-swa-"))
    info = prepare(ModelConfig(model_id_or_path=path, model_name="m"), cache_root=cache)

    def render(msgs):
        body = ChatCompletionRequest(messages=msgs)
        return _render(info, body, body.conversations[0])

    reqs = agent_trace.trace(system_tokens, rounds)
    n_new = 3 * (rounds - 1)  # rotating requests after the first round: new questions
    system_ends = [render(r["messages"])[1][0] for r in reqs[3 : 3 + n_new]]
    runs = {}
    for name, extra in (("cache", []), ("cold", ["--cache-ram-gb", "0", "--cache-disk-gb", "0"])):
        root = cache if not extra else Path(tempfile.mkdtemp())
        srv = ServerProcess(["--model-path", path, "--model-name", "m", *extra], root)
        try:
            runs[name] = agent_trace.run_trace(srv.base_url, "m", reqs, turns, lambda m: render(m)[0])
        finally:
            srv.stop()
    hit = runs["cache"]["records"][3 : 3 + n_new]
    cold = runs["cold"]["records"][3 : 3 + n_new]
    return {
        "prompt": statistics.mean(r["prompt"] for r in hit),
        "system": statistics.mean(system_ends),
        "new": statistics.mean(r["prompt"] - r["cached"] for r in hit),
        "share": statistics.mean(min(r["cached"], e) / e for r, e in zip(hit, system_ends)),
        "ttft_hit": statistics.mean(r["ttft"] for r in hit),
        "ttft_cold": statistics.mean(r["ttft"] for r in cold),
        "conv_cached": [r["cached"] for r in runs["cache"]["records"] if r["kind"] == "conversation"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--chars-per-token", type=float, default=4.2, help="of SmolLM2 on this text")
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas
    from mlx_textgen.models.default import default_model_path

    select_blas("auto")
    gemma = build_gemma(Path(tempfile.mkdtemp(prefix="bench-gemma3-")))
    # The byte-level vocab spends a token a character: shorter text, the same token count.
    gemma_words = int(args.system_tokens / args.chars_per_token)
    models = (("SmolLM2-135M (full attention)", default_model_path(), args.system_tokens),
              ("random Gemma 3 270M shape (window 512)", str(gemma), gemma_words))  # fmt: skip
    print(f"{'model':<40}{'prompt':>8}{'system':>8}{'share':>8}{'new':>6}{'ttft hit':>10}"
          f"{'ttft cold':>10}{'hit/cold':>10}{'per token':>10}  next-turn cached")
    ratios = []
    for name, path, size in models:
        m = measure(path, size, args.rounds, args.turns)
        ratios.append(m["ttft_hit"] / m["ttft_cold"])
        # Time a hit spends per token it computes, over a cold prompt's time per token.
        per_token = (m["ttft_hit"] / m["new"]) / (m["ttft_cold"] / m["prompt"])
        print(f"{name:<40}{m['prompt']:>8.0f}{m['system']:>8.0f}{m['share']:>8.3f}{m['new']:>6.0f}"
              f"{m['ttft_hit']:>10.3f}{m['ttft_cold']:>10.3f}{ratios[-1]:>10.3f}{per_token:>10.2f}"
              f"  {m['conv_cached']}", flush=True)
    print(f"hit/cold ratio, Gemma 3 over SmolLM2: {ratios[1] / ratios[0]:.2f}x (goal: <= 1.5x)")


if __name__ == "__main__":
    main()
