"""The agentic trace (bench/agent_trace.py: rotating long system prompts, new questions, growing
conversations) on a sliding-window model next to a full-attention one.

    .venv/bin/python bench/sliding_window_trace.py [--system-tokens 1000] [--rounds 3]

The sliding-window model is a random Gemma 3 of Gemma 3 270M's shape (18 layers, hidden 640,
head_dim 256, window 512, one global layer in six) saved as a GGUF without a chat template
(the server picks the `gemma` preset). To compare like with like it takes SmolLM2's GGUF as
its pattern: SmolLM2's BPE vocabulary (normal tokens, merges, pre-tokenizer) with Gemma's
special tokens in place of SmolLM2's, so the same system prompts and questions come to about
the same token counts on both models (only the turn markup differs), and SmolLM2's tensor
storage (Q4_1 linears, a Q8_0 embedding; on a CPU the server runs both in float32). The
full-attention model is SmolLM2-135M. (An earlier version used the tests' byte-level
vocabulary, a token a character: a Gemma hit then computed ~50 new tokens against SmolLM2's
~17, so the hit/cold ratios did not compare the caches alone.)

Reported per model: the system prompt's tokens (to its boundary), the share of them that the
new questions over a known system prompt (rounds after the first) had cached, the tokens a
hit still computes, the mean time to first token of those hits and of the same requests on a
server without a cache (which gets only those requests), hit/cold, and Gemma's hit/cold over SmolLM2's.
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


def build_gemma(tmp: Path, like: str) -> Path:
    """The random Gemma 3 with `like`'s BPE vocabulary (plus Gemma's special tokens) and its
    tensors stored as `like` stores them (SmolLM2: Q4_1 linears, a Q8_0 embedding)."""
    from tests.unit.test_gguf_builders import GEMMA_IDS_SPECIALS, vocab_of_gguf, write_tiny_gemma3

    vocab = vocab_of_gguf(like, GEMMA_IDS_SPECIALS)
    return write_tiny_gemma3(tmp, window=512, vocab=vocab, qtypes=qtypes_of(like), **GEMMA_270M_SHAPE)


def qtypes_of(path: str) -> dict:
    """Each tensor's storage type in the GGUF at `path`, for every block index up to 64:
    a tensor of another model with the same name is then stored the same way."""
    from mlx_textgen.models.gguf_file import read_gguf

    out = {}
    for name, t in read_gguf(path).tensors.items():
        if name.startswith("blk."):
            part = name.split(".", 2)[2]
            out.update({f"blk.{i}.{part}": t.qtype for i in range(64)})
        else:
            out[name] = t.qtype
    return out


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
    # Without a cache every request is cold: that server gets only the new questions.
    for name, extra, sent in (("cache", [], reqs),
                              ("cold", ["--cache-ram-gb", "0", "--cache-disk-gb", "0"], reqs[3 : 3 + n_new])):  # fmt: skip
        root = cache if not extra else Path(tempfile.mkdtemp())
        srv = ServerProcess(["--model-path", path, "--model-name", "m", *extra], root)
        try:
            n_turns = turns if name == "cache" else 0
            runs[name] = agent_trace.run_trace(srv.base_url, "m", sent, n_turns, lambda m: render(m)[0])
        finally:
            srv.stop()
    hit = runs["cache"]["records"][3 : 3 + n_new]
    cold = runs["cold"]["records"]
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
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas
    from mlx_textgen.models.default import default_model_path

    select_blas("auto")
    smol = default_model_path()
    gemma = build_gemma(Path(tempfile.mkdtemp(prefix="bench-gemma3-")), smol)
    models = (("SmolLM2-135M (full attention)", smol),
              ("random Gemma 3 270M shape (window 512)", str(gemma)))  # fmt: skip
    print(f"{'model':<40}{'prompt':>8}{'system':>8}{'share':>8}{'new':>6}{'ttft hit':>10}"
          f"{'ttft cold':>10}{'hit/cold':>10}  next-turn cached")
    ratios = []
    for name, path in models:
        m = measure(path, args.system_tokens, args.rounds, args.turns)
        ratios.append(m["ttft_hit"] / m["ttft_cold"])
        print(f"{name:<40}{m['prompt']:>8.0f}{m['system']:>8.0f}{m['share']:>8.3f}{m['new']:>6.0f}"
              f"{m['ttft_hit']:>10.3f}{m['ttft_cold']:>10.3f}{ratios[-1]:>10.3f}"
              f"  {m['conv_cached']}", flush=True)
    print(f"hit/cold ratio, Gemma 3 over SmolLM2: {ratios[1] / ratios[0]:.2f}x (goal: <= 1.5x)")


if __name__ == "__main__":
    main()
