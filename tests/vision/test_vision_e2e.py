"""Vision models end to end: the real server with a tiny random Qwen2-VL and Idefics3 (built
here, no downloads), driven by the official openai client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("mlx_vlm")

from tests.e2e.server import ServerProcess
from tests.vision.images import data_url, encode, huge_png_header, image_url, pixels
from tests.vision_model import write_vision_model

ARCHS = ["qwen2_vl", "idefics3"]
IMAGE_TOKENS = {"qwen2_vl": 4, "idefics3": 4}  # per 56x56 image (see tests/vision_model.py)


class Vision:
    """A server of one tiny vision model and a client for it."""

    def __init__(self, arch: str, server: ServerProcess, media: Path) -> None:
        self.arch, self.server, self.media = arch, server, media
        self.client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k", max_retries=0, timeout=120)
        self.aclient = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="k", max_retries=0, timeout=120)
        self.model = self.client.models.list().data[0].id

    def chat(self, messages: list[dict[str, Any]], **kw: Any) -> Any:
        kw.setdefault("max_tokens", 3)
        kw.setdefault("temperature", 0)
        return self.client.chat.completions.create(model=self.model, messages=messages, **kw)


@pytest.fixture(scope="module", params=ARCHS)
def vision(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vision]:
    root = tmp_path_factory.mktemp(request.param)
    model_dir = write_vision_model(root / "model", request.param)
    media = root / "media"
    media.mkdir()
    srv = ServerProcess(
        ["--model-path", str(model_dir), "--api-key", "k", "--allowed-media-path", str(media)],
        root / "cache",
    )
    yield Vision(request.param, srv, media)
    srv.stop()


def ask(url: str, text: str = "Describe it.", *more: str) -> list[dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in (url, *more)]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def first_logprobs(resp: Any) -> list[float]:
    return [t.logprob for t in resp.choices[0].logprobs.content[0].top_logprobs]


def all_logprobs(resp: Any) -> list[float]:
    return [x.logprob for t in resp.choices[0].logprobs.content for x in t.top_logprobs]


def probe(v: Vision, messages: list[dict[str, Any]], **kw: Any) -> Any:
    return v.chat(messages, logprobs=True, top_logprobs=3, **kw)


def test_data_url_image(vision: Vision) -> None:
    text_only = vision.chat([{"role": "user", "content": "Describe it."}])
    r = vision.chat(ask(image_url(1)))
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    # The image's tokens are in the prompt (plus its markers).
    assert r.usage.prompt_tokens >= text_only.usage.prompt_tokens + IMAGE_TOKENS[vision.arch]


def test_two_images_in_one_message(vision: Vision) -> None:
    one = vision.chat(ask(image_url(11)))
    two = probe(vision, ask(image_url(11), "Describe it.", image_url(12)))
    swapped = probe(vision, ask(image_url(12), "Describe it.", image_url(11)))
    extra = two.usage.prompt_tokens - one.usage.prompt_tokens
    assert extra >= IMAGE_TOKENS[vision.arch]
    assert first_logprobs(two) != first_logprobs(swapped)  # order matters: both were seen


def test_same_image_twice_hits_the_cache(vision: Vision) -> None:
    cold = probe(vision, ask(image_url(21), "What colour dominates?"))
    warm = probe(vision, ask(image_url(21), "What colour dominates?"))
    assert cold.usage.prompt_tokens_details.cached_tokens < 10  # at most the template's head
    assert warm.usage.prompt_tokens_details.cached_tokens == warm.usage.prompt_tokens - 1
    assert first_logprobs(warm) == pytest.approx(first_logprobs(cold), abs=1e-4)


def test_a_different_same_size_image_misses(vision: Vision) -> None:
    a = probe(vision, ask(image_url(31), "Which is it?"))
    b = probe(vision, ask(image_url(32), "Which is it?"))
    # Same token count, but the cache stops before the new image's first token.
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert b.usage.prompt_tokens_details.cached_tokens < 10
    assert first_logprobs(a) != pytest.approx(first_logprobs(b), abs=1e-4)


def test_next_turn_hits_the_image(vision: Vision) -> None:
    turn1 = ask(image_url(41), "First question?")
    r1 = vision.chat(turn1, max_tokens=2)
    turn2 = [*turn1, {"role": "assistant", "content": r1.choices[0].message.content},
             {"role": "user", "content": "And then?"}]  # fmt: skip
    r2 = probe(vision, turn2)
    assert r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens


def test_text_only_is_unaffected_by_image_requests(vision: Vision) -> None:
    text = [{"role": "user", "content": "Only words here, please."}]
    before = probe(vision, text)
    vision.chat(ask(image_url(51)))  # mlx-vlm would leave this image's positions behind
    after = probe(vision, [{"role": "system", "content": "x"}, *text][1:])
    assert first_logprobs(after) == pytest.approx(first_logprobs(before), abs=1e-4)


@pytest.mark.parametrize(
    "url, words",
    [
        (data_url(b"not an image at all"), "not an image"),
        (data_url(encode(pixels(1))[:90]), "could not be decoded"),
        (data_url(huge_png_header()), "too large"),
        ("data:image/png;base64,@@@@", "base64"),
        ("ftp://example.com/a.png", "data:, http(s): or file:"),
    ],
    ids=["not-an-image", "truncated", "oversized", "bad-base64", "bad-scheme"],
)
def test_bad_images_are_400_naming_the_part(vision: Vision, url: str, words: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *ask(image_url(2), "Compare.", url)]
    with pytest.raises(openai.BadRequestError) as err:
        vision.chat(messages)
    body = err.value.body
    assert body["param"] == "messages[1].content[1]" and words in body["message"]


def test_local_files_only_under_the_allowed_path(vision: Vision, tmp_path: Path) -> None:
    inside = vision.media / "a.png"
    inside.write_bytes(encode(pixels(61)))
    r = vision.chat(ask(f"file://{inside}"))
    assert r.usage.prompt_tokens > IMAGE_TOKENS[vision.arch]
    outside = tmp_path / "b.png"
    outside.write_bytes(encode(pixels(62)))
    escape = vision.media / "link.png"
    escape.symlink_to(outside)
    for url in (str(outside), f"file://{escape}", f"file://{vision.media}/../b.png"):
        with pytest.raises(openai.BadRequestError) as err:
            vision.chat(ask(url))
        assert err.value.body["param"] == "messages[0].content[0]"


def test_a_private_address_url_is_refused(vision: Vision) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        vision.chat(ask(f"{vision.server.base_url}/health"))
    assert err.value.body["param"] == "messages[0].content[0]"
    assert "loopback: refused" in err.value.body["message"]  # the fetch guard's own reason


def test_too_many_images_is_a_400_before_any_is_loaded(vision: Vision) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "http://192.0.2.1/x.png"}}] * 17
    with pytest.raises(openai.BadRequestError) as err:
        vision.chat([{"role": "user", "content": parts}])
    assert "at most 16 images" in err.value.body["message"]


def test_n2_streaming_and_a_seed_with_an_image(vision: Vision) -> None:
    messages = ask(image_url(71), "Say something.")
    r = vision.chat(messages, n=2, temperature=1.0, seed=7, max_tokens=4)
    again = vision.chat(messages, n=2, temperature=1.0, seed=7, max_tokens=4)
    assert len(r.choices) == 2 and r.usage.completion_tokens == 8
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    stream = vision.chat(messages, stream=True, max_tokens=4)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == vision.chat(messages, max_tokens=4).choices[0].message.content


def test_structured_output_with_an_image(vision: Vision) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    r = vision.chat(
        ask(image_url(81), "Count."), max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content)["n"], int)


def test_concurrent_image_requests_match_each_alone(vision: Vision) -> None:
    """Batched with others, each sequence keeps its own image positions."""
    prompts = [ask(image_url(90 + i), "Go on.") for i in range(3)] + [
        [{"role": "user", "content": "No picture in this one."}]
    ]
    alone = [all_logprobs(probe(vision, p, max_tokens=4)) for p in prompts]

    async def together() -> list[Any]:
        calls = [
            vision.aclient.chat.completions.create(
                model=vision.model, messages=p, max_tokens=4, temperature=0, logprobs=True,
                top_logprobs=3,
            )
            for p in prompts
        ]
        return await asyncio.gather(*calls)

    # Tokens after the first are decoded in one batch, each row at its own positions.
    for got, want in zip(asyncio.run(together()), alone):
        assert all_logprobs(got) == pytest.approx(want, abs=1e-4)


def test_a_named_tool_call_about_an_image(vision: Vision) -> None:
    params = {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    r = vision.chat(
        ask(image_url(101), "Count."), max_tokens=200,
        tools=[{"type": "function", "function": {"name": "count", "parameters": params}}],
        tool_choice={"type": "function", "function": {"name": "count"}},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "count" and json.loads(call.function.arguments)["n"] in (1, 2)


def test_responses_style_part_penalties_and_stops(vision: Vision) -> None:
    url = image_url(111)
    chat = ask(url)
    responses = [{"role": "user", "content": [{"type": "input_image", "image_url": url},
                                              {"type": "text", "text": "Describe it."}]}]  # fmt: skip
    assert first_logprobs(probe(vision, responses)) == pytest.approx(first_logprobs(probe(vision, chat)), abs=1e-4)
    # Image-key ids in the context never reach a penalty's vocabulary-sized counts.
    r = vision.chat(chat, max_tokens=4, extra_body={"repetition_penalty": 1.3, "presence_penalty": 0.5})
    assert r.usage.completion_tokens == 4
    full = vision.chat(chat, max_tokens=8).choices[0].message.content or ""
    ascii_chars = [ch for ch in full if ch.isascii()]  # random bytes decode to U+FFFD too
    if ascii_chars:
        stop = ascii_chars[-1]
        stopped = vision.chat(chat, max_tokens=8, stop=[stop])
        assert stopped.choices[0].finish_reason == "stop"
        assert stopped.choices[0].message.content == full[: full.index(stop)]
    with pytest.raises(openai.BadRequestError) as err:
        vision.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url, "detail": "max"}}]}])
    assert err.value.body["param"] == "messages[0].content[0].image_url.detail"
