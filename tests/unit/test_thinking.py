"""The thinking-budget constraint on a byte-level vocabulary (no model)."""

from __future__ import annotations

import numpy as np

from mlx_textgen.guided.compiler import GrammarCache
from mlx_textgen.guided.constraint import GrammarConstraint, Triggered, mask_words
from mlx_textgen.guided.forms import JsonStyle, after_whitespace, from_request
from mlx_textgen.guided.thinking import ThinkingBudget
from tests.unit.test_guided import VOCAB, ids, tokenizer  # noqa: F401 - the fixture

END = "</t>"


def allowed(words: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))]


def feed(c, text: str) -> None:
    words = mask_words(VOCAB)
    for t in ids(text):
        if c.fill_mask(words):
            assert t in allowed(words), text
        c.accept(t)


def test_budget_forces_the_end_marker_then_the_grammar_applies(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = after_whitespace(from_request({"guided_choice": ["yes", "no"]}, JsonStyle()).grammar)
    c = ThinkingBudget(GrammarConstraint(cache.matcher(grammar), tokenizer.vocab_size), tokenizer, end=END,
                       end_ids=ids(END), budget=7)
    words = mask_words(VOCAB)
    for t in ids("hmm"):  # 3 tokens of thinking, then 4 forced: the budget of 7
        assert not c.fill_mask(words)
        c.accept(t)
    for t in ids(END):
        assert c.fill_mask(words) and allowed(words) == [t]
        c.accept(t)
    assert c.phase == "done" and c.count == 7
    twin = c.fork()
    feed(c, "\nyes")
    assert c.is_finished() and not twin.is_finished()


def test_the_models_own_end_marker_ends_the_thinking(tokenizer):
    c = ThinkingBudget(None, tokenizer, end=END, end_ids=ids(END), budget=100)
    feed(c, "a b</t>answer")
    assert c.phase == "done" and c.count == len("a b</t>")
    assert not c.fill_mask(mask_words(VOCAB)) and not c.is_finished()


def test_an_optional_opening_counts_only_inside(tokenizer):
    c = ThinkingBudget(None, tokenizer, end=END, end_ids=ids(END), budget=6, start="<t>",
                       start_ids=ids("<t>"))
    feed(c, " <t>ab")
    assert c.phase == "thinking" and c.count == 2  # the opening marker is not counted
    words = mask_words(VOCAB)
    assert c.fill_mask(words) and allowed(words) == [ids("<")[0]]


def test_no_opening_hands_the_held_text_to_the_inner_constraint(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": "<call>[a-z]+"}, JsonStyle()).grammar
    inner = Triggered(GrammarConstraint(cache.matcher(grammar), tokenizer.vocab_size), "<call>", True, tokenizer)
    c = ThinkingBudget(inner, tokenizer, end=END, end_ids=ids(END), start="<t>", start_ids=ids("<t>"))
    feed(c, "<cal")
    assert c.phase == "done"
    feed(c, "l>ab")
    assert inner.active and c.error() is None
