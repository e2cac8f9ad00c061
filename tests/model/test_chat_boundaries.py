"""Message boundaries the chat route hands to the prompt cache, on the real tokenizer."""

from __future__ import annotations

import pytest

from mlx_textgen.api.protocol import ChatCompletionRequest
from mlx_textgen.api.routes.chat import _render
from mlx_textgen.config import ModelConfig
from mlx_textgen.models.loader import prepare


@pytest.fixture(scope="module")
def info(smollm2_gguf, cache_root):
    return prepare(ModelConfig(smollm2_gguf), cache_root=cache_root)


def test_system_and_previous_turn_boundaries(info):
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
    ]
    body = ChatCompletionRequest(messages=msgs)
    ids, bounds = _render(info, body, body.conversations[0])
    assert len(bounds) == 2 and all(0 < b < len(ids) for b in bounds)
    tok = info.hf_tokenizer
    system_text = tok.decode(ids[: bounds[0]])
    assert system_text.rstrip().endswith("You are terse.<|im_end|>") or "You are terse." in system_text
    assert "Capital" not in tok.decode(ids[: bounds[1]]) and "Hello." in tok.decode(ids[: bounds[1]])
    # The next turn of the same conversation starts with exactly these tokens.
    longer = ChatCompletionRequest(messages=[*msgs, {"role": "assistant", "content": "Paris."},
                                             {"role": "user", "content": "And Spain?"}])
    ids2, _ = _render(info, longer, longer.conversations[0])
    assert ids2[: bounds[1]] == ids[: bounds[1]]


def test_single_user_message_has_no_boundaries(info):
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "Hi"}])
    ids, bounds = _render(info, body, body.conversations[0])
    assert bounds == () and ids
