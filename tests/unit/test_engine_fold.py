"""Deltas that wait together are sent together: `fold` merges them per choice."""

from __future__ import annotations

from mlx_textgen.engine.engine import fold
from mlx_textgen.engine.request import FinishReason, RequestOutput, TokenLogprob


def delta(text: str, token: int, n: int, finish: FinishReason | None = None) -> RequestOutput:
    return RequestOutput("r", text, [token], [TokenLogprob(token, text, -0.5)], finish,
                         prompt_tokens=4, completion_tokens=n, cached_tokens=2)  # fmt: skip


def test_one_delta_per_choice_is_unchanged():
    batch = [(0, delta("a", 1, 1)), (1, delta("b", 2, 1))]
    assert fold(list(batch)) == batch


def test_waiting_deltas_of_a_choice_merge_in_order():
    batch = [(0, delta("He", 1, 1)), (1, delta("X", 9, 1)), (0, delta("llo", 2, 2)),
             (0, delta("!", 3, 3, FinishReason.STOP))]  # fmt: skip
    (i, a), (j, b) = fold(batch)
    assert (i, j) == (0, 1)
    assert a.text == "Hello!" and a.token_ids == [1, 2, 3]
    assert [lp.token_id for lp in a.logprobs] == [1, 2, 3]
    assert a.completion_tokens == 3 and a.finish_reason == FinishReason.STOP
    assert b.text == "X" and not b.finished


def test_an_error_stays_separate_so_earlier_text_is_delivered():
    err = RequestOutput("r", finish_reason=FinishReason.ERROR, error="timed out", error_status=504)
    out = fold([(0, delta("partial", 1, 1)), (0, err)])
    assert [o.text for _, o in out] == ["partial", ""]
    assert out[1][1].error == "timed out"
