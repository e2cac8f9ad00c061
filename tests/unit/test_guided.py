"""Constraint forms, the grammar cache, the after-marker switch and the mask, without a model."""

from __future__ import annotations

import json
import time

import mlx.core as mx
import numpy as np
import pytest
from llguidance import LLMatcher, LLTokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlx_textgen.guided.compiler import ConstraintError, GrammarCache
from mlx_textgen.guided.constraint import GrammarConstraint, Triggered, mask_words
from mlx_textgen.guided.forms import JsonStyle, after_whitespace, from_request
from mlx_textgen.guided.guide import Guide
from mlx_textgen.guided.masks import MaskBuffer
from mlx_textgen.guided.rows import RowMasks

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> LLTokenizer:
    """A byte-level vocabulary: byte b is token b + 1, EOS is 0, and one merged token ">x"."""
    chars = pre_tokenizers.ByteLevel.alphabet()
    table = _byte_chars()
    assert set(table) == set(chars)
    vocab = {"</s>": 0} | {ch: b + 1 for b, ch in enumerate(table)} | {">x": GT_X}
    tok = Tokenizer(models.BPE(vocab, merges=[(">", "x")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return LLTokenizer(str(path), eos_token=0)


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table, the one ByteLevel uses."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


GT_X = 257  # the token ">x"
VOCAB = 258


def ids(text: str) -> list[int]:
    return [b + 1 for b in text.encode()]


def test_every_spelling_of_a_json_schema_gives_the_same_grammar():
    style = JsonStyle()
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    grammars = {
        from_request({"response_format": rf}, style).grammar,
        from_request({"guided_json": SCHEMA}, style).grammar,
        from_request({"guided_json": json.dumps(SCHEMA)}, style).grammar,
        from_request({"structured_outputs": {"json": SCHEMA}}, style).grammar,
        from_request({"json_schema": SCHEMA}, style).grammar,
    }
    assert len(grammars) == 1


def test_text_format_and_absent_fields_are_no_constraint():
    assert from_request({"response_format": {"type": "text"}}, JsonStyle()) is None
    assert from_request({"guided_json": None}, JsonStyle()) is None


@pytest.mark.parametrize(
    "fields,param,words",
    [
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice", "`guided_regex` and `guided_choice`"),
        ({"response_format": {"type": "json_object"}, "grammar": "start: \"a\""}, "grammar", "`response_format` and `grammar`"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "'xml'"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "must be an object"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA, "extra": 1}}},
         "response_format.json_schema", "extra"),
        ({"guided_json": "{not json"}, "guided_json", "not valid JSON"),
        ({"guided_json": "[1]"}, "guided_json", "JSON schema object"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_choice": ["a", 3]}, "guided_choice", "string"),
        ({"guided_regex": ""}, "guided_regex", "non-empty"),
        ({"guided_grammar": "  "}, "guided_grammar", "non-empty"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one"),
        ({"structured_outputs": {"foo": 1}}, "structured_outputs", "foo"),
        ({"guided_whitespace_pattern": 3, "guided_json": SCHEMA}, "guided_whitespace_pattern", "string"),
    ],
)
def test_bad_forms_name_the_field(fields, param, words):
    with pytest.raises(ConstraintError) as err:
        from_request(fields, JsonStyle())
    assert err.value.param == param
    assert words in err.value.message


def test_compile_errors_say_what_is_wrong(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    cases = {
        "guided_regex": ({"guided_regex": "a[b"}, "unclosed character class"),
        "guided_json": ({"guided_json": {"type": "strin"}}, "strin"),
        "unsupported": ({"guided_json": {"type": "array", "uniqueItems": True}}, "uniqueItems"),
        "guided_grammar": ({"guided_grammar": "start: nothing_here"}, "nothing_here"),
    }
    for fields, words in cases.values():
        grammar = from_request(fields, JsonStyle()).grammar
        with pytest.raises(ConstraintError) as err:
            cache.check(grammar)
        assert words in err.value.message


def run(constraint, text: str) -> None:
    words = mask_words(VOCAB)
    for t in ids(text):
        assert constraint.fill_mask(words)
        assert np.unpackbits(words.view(np.uint8), bitorder="little")[t], text
        constraint.accept(t)


def test_choices_are_literal(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_choice": ["C++", "a.b"]}, JsonStyle()).grammar
    ok = GrammarConstraint(cache.matcher(grammar), VOCAB)
    run(ok, "a.b")
    assert ok.is_finished()
    # "a.b" is not a regex: "axb" is refused at the "x"
    words = mask_words(VOCAB)
    bad = GrammarConstraint(cache.matcher(grammar), VOCAB)
    bad.accept(ids("a")[0])
    bad.fill_mask(words)
    assert not np.unpackbits(words.view(np.uint8), bitorder="little")[ids("x")[0]]


def test_gbnf_is_accepted_as_well_as_lark(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    gbnf = 'root ::= "x" [0-9]+'
    c = GrammarConstraint(cache.matcher(from_request({"grammar": gbnf}, JsonStyle()).grammar), VOCAB)
    run(c, "x12")
    assert not c.is_finished() and c.error() is None


def test_json_is_compact_unless_a_whitespace_pattern_relaxes_it(tokenizer):
    cache = GrammarCache(lambda: tokenizer)

    def allows_space_after_brace(fields: dict) -> bool:
        m = cache.matcher(from_request(fields, JsonStyle()).grammar)
        m.consume_token(ids("{")[0])
        return ids(" ")[0] in [i for i in range(VOCAB) if _allowed(m, i)]

    assert not allows_space_after_brace({"guided_json": SCHEMA})
    assert allows_space_after_brace({"guided_json": SCHEMA, "guided_whitespace_pattern": "[ ]?"})
    assert allows_space_after_brace({"structured_outputs": {"json": SCHEMA, "disable_any_whitespace": False}})


def _allowed(m: LLMatcher, token: int) -> bool:
    words = mask_words(VOCAB)
    m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
    return bool(np.unpackbits(words.view(np.uint8), bitorder="little")[token])


def test_cached_grammars_compile_once_and_give_independent_matchers(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_json": SCHEMA}, JsonStyle()).grammar
    assert grammar not in cache
    cache.check(grammar)
    assert grammar in cache
    t = time.perf_counter()
    a, b = cache.matcher(grammar), cache.matcher(grammar)
    assert time.perf_counter() - t < 0.05
    a.consume_tokens(ids('{"a":1'))
    assert not b.is_error() and b.consume_token(ids("{")[0])


def test_a_trigger_switches_the_constraint_on_after_it(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = after_whitespace(from_request({"guided_choice": ["yes", "no"]}, JsonStyle()).grammar)
    c = Triggered(GrammarConstraint(cache.matcher(grammar), VOCAB), "</t>", False, tokenizer)
    words = mask_words(VOCAB)
    for t in ids("hmm </t"):
        assert not c.fill_mask(words)
        c.accept(t)
    twin_before = c.fork()
    c.accept(ids(">")[0])
    assert c.fill_mask(words)
    run(c, "\nno")
    assert c.is_finished()
    assert not twin_before.is_finished() and not twin_before.fill_mask(words)


def test_a_trigger_inside_a_token_feeds_the_grammar_its_part(tokenizer):
    """The grammar matches the marker itself (a tool call's start): a token holding text
    before the marker and the marker's first bytes is split where the marker starts."""
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": r"<call>[a-z]+</call>"}, JsonStyle()).grammar
    c = Triggered(GrammarConstraint(cache.matcher(grammar), VOCAB), "<call>", True, tokenizer)
    fake_token = tokenizer.tokenize_str("ok <ca")  # several byte tokens standing for one
    for t in fake_token:
        c.accept(t)
    assert not c.active
    for t in ids("ll>ab"):
        c.accept(t)
    assert c.active and c.error() is None
    run(c, "c</call>")
    assert c.is_finished()


def test_a_trigger_followed_by_what_the_grammar_refuses_leaves_the_output_free(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": r"<call>[0-9]+"}, JsonStyle()).grammar
    c = Triggered(GrammarConstraint(cache.matcher(grammar), VOCAB), "<call>", True, tokenizer)
    for t in ids("<call"):
        c.accept(t)
    c.accept(GT_X)  # completes the marker and carries an "x" the grammar refuses
    assert c.failed and not c.active and c.error() is None
    assert not c.fill_mask(mask_words(VOCAB))


def test_a_trigger_at_the_start_only(tokenizer):
    """Llama's bare `{`: a call when the output opens with it, plain text otherwise."""
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": r'"name":[a-z]+\}'}, JsonStyle()).grammar

    def triggered(text: str) -> Triggered:
        c = Triggered(GrammarConstraint(cache.matcher(grammar), VOCAB), "{", False, tokenizer, at_start=True)
        for t in ids(text):
            c.accept(t)
        return c

    assert triggered('  {').active
    late = triggered("I think {")
    assert late.failed and not late.active
    waiting = triggered("  ")
    assert not waiting.active and not waiting.failed


def test_mask_sets_disallowed_tokens_to_minus_inf():
    words = np.stack([mask_words(40), mask_words(40)])
    words[0, 0] = 0b1010  # tokens 1 and 3
    words[0, 1] = 1 | (1 << 20)  # tokens 32 and 52, past the model's 48
    words[1] = -1
    buf = MaskBuffer(words.shape[1])
    buf.rows(2)[:] = words
    out = np.array(buf.apply(mx.zeros((2, 1, 48))))
    assert [i for i in range(48) if np.isfinite(out[0, 0, i])] == [1, 3, 32]
    assert np.isfinite(out[1]).all()


def test_guide_observes_each_token_once(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    guide = Guide(GrammarConstraint(cache.matcher(from_request({"guided_regex": "ab+"}, JsonStyle()).grammar), VOCAB))
    guide.observe(0, ids("a")[0])
    guide.observe(0, ids("a")[0])  # the hook and the accounting both saw it: counted once
    guide.observe(2, ids("b")[0])  # out of order: ignored
    guide.observe(1, ids("b")[0])
    assert guide.consumed == 2 and guide.error() is None and not guide.closed


def test_row_masks_mask_constrained_rows_and_leave_free_rows_alone(tokenizer):
    cache = GrammarCache(lambda: tokenizer)
    rows = RowMasks(VOCAB)
    a = Guide(GrammarConstraint(cache.matcher(from_request({"guided_regex": "ab"}, JsonStyle()).grammar), VOCAB))
    b = Guide(GrammarConstraint(cache.matcher(from_request({"guided_regex": "b+"}, JsonStyle()).grammar), VOCAB))
    rows.attach(7, a, generated=0)  # a fresh row: its first input is the prompt's last token
    rows.attach(9, b, generated=2)  # moved in from a lone decode: its input is token 1
    b.observe(0, ids("b")[0])
    b.observe(1, ids("b")[0])
    logits = mx.zeros((3, 1, VOCAB))
    # Row order: 7 (constrained), 5 (free), 9 (constrained); inputs are last step's tokens.
    out = rows([7, 5, 9], mx.array([42, 43, ids("b")[0]]), logits)
    allowed = [set(np.flatnonzero(np.isfinite(np.array(out[i, 0])))) for i in range(3)]
    assert allowed[0] == {ids("a")[0]}
    assert len(allowed[1]) == VOCAB  # the free row is untouched
    assert ids("b")[0] in allowed[2] and ids("a")[0] not in allowed[2]
    assert a.consumed == 0 and b.consumed == 2  # the prompt token and an observed one: no-ops
    out = rows([7, 5, 9], mx.array([ids("a")[0], 1, ids("b")[0]]), logits)
    assert a.consumed == 1 and b.consumed == 3
    assert set(np.flatnonzero(np.isfinite(np.array(out[0, 0])))) == {ids("b")[0]}
    a.close()
    out = rows([5, 9], mx.array([1, ids("b")[0]]), mx.zeros((2, 1, VOCAB)))
    assert b.consumed == 4 and bool(mx.all(mx.isfinite(out[0])).item())


def test_row_masks_leave_a_batch_without_constrained_rows_as_it_was():
    logits = mx.zeros((2, 1, VOCAB))
    assert RowMasks(VOCAB)([1, 2], mx.array([3, 4]), logits) is logits


def test_logits_past_the_tokenizer_are_never_allowed_under_a_constraint(tokenizer):
    # A model's embeddings padded past its tokenizer (Qwen2.5: 151,936 logits, 151,665 tokens).
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": "a+"}, JsonStyle()).grammar
    wide, narrow = VOCAB + 100, VOCAB - 10
    for model_vocab in (wide, narrow):
        rows = RowMasks(model_vocab)
        rows.attach(0, Guide(GrammarConstraint(cache.matcher(grammar), VOCAB)), generated=0)
        out = np.array(rows([0], mx.array([1]), mx.zeros((1, 1, model_vocab))))
        assert set(np.flatnonzero(np.isfinite(out[0, 0]))) == {ids("a")[0]}


@pytest.mark.parametrize("order", ["device", "host"])
def test_both_hook_orders_write_the_same_masks(tokenizer, order):
    # The host order (GPU only: read the tokens, write the masks on the writer thread while
    # the forward pass is queued) must mask exactly as the device order does.
    cache = GrammarCache(lambda: tokenizer)
    grammar = from_request({"guided_regex": "ab+"}, JsonStyle()).grammar
    rows = RowMasks(VOCAB)
    rows._separate_device = True  # as if on a GPU
    rows.host_order = order == "host"
    rows._read = lambda tokens: tokens.tolist()  # held in this order
    guide = Guide(GrammarConstraint(cache.matcher(grammar), VOCAB))
    rows.attach(3, guide, generated=0)
    seen = []
    for token in [42, ids("a")[0], ids("b")[0]]:  # the prompt's last token, then generated ones
        out = rows([5, 3], mx.array([1, token]), mx.zeros((2, 1, VOCAB)))
        seen.append(set(np.flatnonzero(np.isfinite(np.array(out[1, 0])))))
        assert bool(mx.all(mx.isfinite(out[0])).item())  # the free row
    assert seen == [{ids("a")[0]}, {ids("b")[0]}, {ids("b")[0], 0}]  # then b or the end (EOS)
    assert rows.orders[order] == 3 and guide.consumed == 2


def test_reading_ready_tokens_picks_the_host_order_only_on_a_separate_device():
    rows = RowMasks(VOCAB)
    ready = mx.array([1, 2])
    mx.eval(ready)
    rows._read(ready)
    assert rows._separate_device is False and not rows.host_order  # MLX's CPU device here
    rows._separate_device = True  # as on a GPU
    rows._read(ready)
    assert rows.host_order


def test_mask_buffer_is_read_in_place_and_grows():
    buf = MaskBuffer(words=2)
    host = buf.rows(3)  # capacity 4
    host.fill(-1)
    host[1] = 0
    host[1, 0] = 0b100  # token 2 only
    out = np.array(buf.apply(mx.zeros((3, 1, 64))))
    assert np.isfinite(out[0]).all() and np.isfinite(out[2]).all()
    assert list(np.flatnonzero(np.isfinite(out[1, 0]))) == [2]
    host = buf.rows(3)  # the same memory, rewritten for the next step
    host.fill(-1)
    assert np.isfinite(np.array(buf.apply(mx.zeros((3, 1, 64))))).all()
    grown = buf.rows(9)
    assert grown.shape == (9, 2)
    grown.fill(0)
    assert not np.isfinite(np.array(buf.apply(mx.zeros((9, 1, 64))))).any()


def test_mask_writer_runs_jobs_and_hands_back_their_errors():
    from mlx_textgen.guided.masks import MaskWriter

    w, seen = MaskWriter(), []
    w.start(lambda: seen.append(1))
    w.join()

    def broken():
        raise RuntimeError("bad mask")

    w.start(broken)
    with pytest.raises(RuntimeError, match="bad mask"):
        w.join()
    w.start(lambda: seen.append(2))  # still usable
    w.join()
    assert seen == [1, 2]
