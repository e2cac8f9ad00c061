"""Per-token cost of the tool-call grammars (llguidance mask + consume), SmolLM2's tokenizer.

Walks a forced call of each format token by token, timing compute_bitmask() and
consume_token(); prints the mean and p95 per token and the grammar's compile time. This is
the CPU work a constrained decode step adds (the engine may overlap it with the forward pass).

    .venv/bin/python bench/tool_grammar_mask.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import llguidance

from mlx_textgen.models.default import default_model_path
from mlx_textgen.models.gguf_file import read_gguf
from mlx_textgen.models.gguf_tokenizer import build_tokenizer_files
from mlx_textgen.parsers.grammars import tool_call_grammar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit._parser_cases import WEATHER_TOOLS
from tests.unit.test_parsers_grammar import CALLS


def _tokenizer() -> llguidance.LLTokenizer:
    files = build_tokenizer_files(read_gguf(default_model_path()))
    path = Path(tempfile.mkdtemp()) / "tokenizer.json"
    path.write_text(files.tokenizer_json, encoding="utf-8")
    return llguidance.LLTokenizer(str(path))


def main() -> None:
    tok = _tokenizer()
    print(f"vocab {tok.vocab_size}; per token: mask + consume (ms)")
    print(f"{'format':15} {'tokens':>6} {'compile':>8} {'mean':>7} {'p95':>7}")
    for fmt, text in sorted(CALLS.items()):
        grammar = tool_call_grammar(fmt, WEATHER_TOOLS).grammar
        t0 = time.perf_counter()
        matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
        compile_ms = (time.perf_counter() - t0) * 1e3
        times = []
        for token in tok.tokenize_str(text):
            t0 = time.perf_counter()
            matcher.compute_bitmask()
            matcher.consume_token(token)
            times.append((time.perf_counter() - t0) * 1e3)
        assert matcher.is_accepting() and not matcher.is_error(), fmt
        p95 = sorted(times)[int(0.95 * (len(times) - 1))]
        print(
            f"{fmt:15} {len(times):6d} {compile_ms:8.2f} {statistics.mean(times):7.3f} {p95:7.3f}"
        )


if __name__ == "__main__":
    main()
