"""Chat template rendering: presets, system folding, continuation, the HF-like environment, and
every real template in shared/fixtures/chat_templates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mlx_textgen.chat.templates import (
    PRESET_NAMES,
    ChatTemplateError,
    load_preset,
    preset_end_of_turn,
    render_chat,
    supports_system_role,
)
from mlx_textgen.config import TEMPLATE_PRESETS

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "chat_templates"

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]

EXPECTED = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llama3": "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    "Hello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    "deepseek": "<s>Be brief.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜>"
    "<｜User｜>Bye<｜Assistant｜>",
    "openchat": "<s>Be brief.<|end_of_turn|>GPT4 Correct User: Hi<|end_of_turn|>"
    "GPT4 Correct Assistant: Hello!<|end_of_turn|>GPT4 Correct User: Bye<|end_of_turn|>"
    "GPT4 Correct Assistant:",
    "phi": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
    "<|user|>\nBye<|end|>\n<|assistant|>\n",
    "mistral": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]",
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name."}},
                "required": ["city"],
            },
        },
    }
]
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call00001",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call00001", "content": "sunny, 21 C"},
]


def render(messages: list[dict], **kwargs: object) -> str:
    kwargs.setdefault("chat_template", None)
    return render_chat(messages, bos_token="<s>", eos_token="</s>", **kwargs)


def fixture(name: str) -> str:
    path = FIXTURES / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"fixture {path} not available")
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- presets


def test_preset_names_match_config_choices() -> None:
    assert PRESET_NAMES == TEMPLATE_PRESETS
    assert set(EXPECTED) == set(PRESET_NAMES)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_renders_conversation(preset: str) -> None:
    assert render(CONVERSATION, preset=preset) == EXPECTED[preset]


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_generation_prompt_is_the_only_difference(preset: str) -> None:
    with_prompt = render(CONVERSATION, preset=preset)
    without = render(CONVERSATION, preset=preset, add_generation_prompt=False)
    if preset == "mistral":  # no generation prompt in this format
        assert with_prompt == without
    elif preset == "phi":  # phi closes a finished conversation with eos
        assert without.endswith("<|end|>\n</s>")
        assert with_prompt == without.removesuffix("</s>") + "<|assistant|>\n"
    else:
        assert with_prompt.startswith(without) and len(with_prompt) > len(without)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_preset_end_of_turn_closes_assistant_turns(preset: str) -> None:
    end = preset_end_of_turn(preset) or "</s>"
    assert "Hello!" + end in render(CONVERSATION, preset=preset)


def test_preset_overrides_chat_template() -> None:
    assert (
        render(CONVERSATION, chat_template="{{ 'ignored' }}", preset="chatml") == EXPECTED["chatml"]
    )


@pytest.mark.parametrize(
    ("preset", "fixture_name", "adjust"),
    [
        ("chatml", "Qwen-Qwen2.5-7B-Instruct", lambda text: text),
        ("phi", "microsoft-Phi-3.5-mini-instruct", lambda text: text),
        ("gemma", "google-gemma-2-2b-it", lambda text: text),
        # The R1 distill opens the answer with <think>; the generic preset does not.
        (
            "deepseek",
            "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
            lambda t: t.removesuffix("<think>\n"),
        ),
    ],
)
def test_preset_matches_the_family_template(preset: str, fixture_name: str, adjust) -> None:
    real = render(CONVERSATION, chat_template=fixture(fixture_name))
    assert render(CONVERSATION, preset=preset) == adjust(real)


def test_chatml_preset_renders_tools_calls_and_results() -> None:
    text = render(TOOL_TURNS, preset="chatml", tools=TOOLS)
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    )
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_llama3_preset_renders_tools() -> None:
    text = render(TOOL_TURNS, preset="llama3", tools=TOOLS)
    assert "Environment: ipython" in text and '"name": "get_weather"' in text
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>' in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\nsunny, 21 C<|eot_id|>" in text


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_renders_a_tool_conversation(preset: str) -> None:
    text = render([{"role": "system", "content": "S"}, *TOOL_TURNS], preset=preset, tools=TOOLS)
    assert "Weather in Paris?" in text and "sunny, 21 C" in text and "None" not in text


def test_unknown_preset_and_missing_template_raise() -> None:
    with pytest.raises(ChatTemplateError, match="unknown chat template preset"):
        render(CONVERSATION, preset="vicuna")
    with pytest.raises(ChatTemplateError, match="no chat template"):
        render(CONVERSATION)
    with pytest.raises(ChatTemplateError):
        load_preset("../config")


# ---------------------------------------------------------------------------- system folding


def test_system_is_folded_for_template_that_rejects_it() -> None:
    gemma = fixture("google-gemma-2-2b-it")
    assert not supports_system_role(gemma)
    text = render(CONVERSATION[:2], chat_template=gemma)
    assert text == "<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_system_is_folded_for_template_that_drops_it() -> None:
    drops = (
        "{% for m in messages if m.role != 'system' %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    assert not supports_system_role(drops)
    assert (
        render(CONVERSATION, chat_template=drops)
        == "user: Be brief.\n\nHi\nassistant: Hello!\nuser: Bye\n"
    )


def test_template_with_system_role_keeps_it() -> None:
    assert supports_system_role(fixture("Qwen-Qwen2.5-7B-Instruct"))
    text = render(CONVERSATION, chat_template=fixture("Qwen-Qwen2.5-7B-Instruct"))
    assert "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>" in text


def test_template_errors_surface_as_chat_template_error() -> None:
    gemma = fixture("google-gemma-2-2b-it")
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render(two_users, chat_template=gemma)
    with pytest.raises(ChatTemplateError, match="invalid chat template"):
        render(two_users, chat_template="{% for m in messages %}")


# ---------------------------------------------------------------------------- continuation


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_continue_final_message_ends_with_partial_text(preset: str) -> None:
    messages = [*CONVERSATION, {"role": "assistant", "content": "Goodbye, and"}]
    text = render(messages, preset=preset, continue_final_message=True)
    assert text.endswith("Goodbye, and")
    full = render(messages, preset=preset, add_generation_prompt=False)
    assert full.startswith(text) and len(full) > len(text)  # the end-of-turn was cut


def test_continue_final_message_cuts_at_the_last_occurrence() -> None:
    messages = [{"role": "user", "content": "Say Hello"}, {"role": "assistant", "content": "Hello"}]
    text = render(messages, preset="chatml", continue_final_message=True)
    assert text == "<|im_start|>user\nSay Hello<|im_end|>\n<|im_start|>assistant\nHello"


def test_continue_final_message_trailing_space() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well, "}]
    assert render(messages, preset="chatml", continue_final_message=True).endswith("Well, ")
    # llama3 trims content, so (as in transformers) the trailing space cannot survive.
    assert render(messages, preset="llama3", continue_final_message=True).endswith("Well,")


def test_continue_final_message_needs_an_assistant_message() -> None:
    with pytest.raises(ChatTemplateError, match="assistant message last"):
        render(CONVERSATION, preset="chatml", continue_final_message=True)


# ---------------------------------------------------------------------------- environment


def test_environment_matches_transformers_conventions() -> None:
    template = (
        "{{ data | tojson }}|{{ data | tojson(indent=2) }}|"
        "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}|"
        "{{ strftime_now('%Y') | length }}|{% generation %}kept{% endgeneration %}|{{ flavour }}"
    )
    text = render(
        [], chat_template=template, template_kwargs={"data": {"é": "<b>"}, "flavour": "x"}
    )
    assert text == '{"é": "<b>"}|{\n  "é": "<b>"\n}|01|4|kept|x'


def test_template_kwargs_cannot_replace_reserved_names() -> None:
    kwargs = {"messages": [], "bos_token": "X", "add_generation_prompt": False, "tools": [1]}
    text = render([{"role": "user", "content": "Hi"}], preset="chatml", template_kwargs=kwargs)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_raise_exception_message_is_kept() -> None:
    template = "{{ raise_exception('no tools here') }}"
    with pytest.raises(ChatTemplateError, match="no tools here"):
        render([{"role": "user", "content": "x"}], chat_template=template)


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(ChatTemplateError):
        render([], chat_template="{{ ''.__class__.__mro__ }}")


def test_tool_call_arguments_as_object_then_string() -> None:
    qwen = render(TOOL_TURNS, chat_template=fixture("Qwen-Qwen2.5-7B-Instruct"), tools=TOOLS)
    assert '"arguments": {"city": "Paris"}}' in qwen  # parsed, not double-encoded
    # The R1 distill concatenates arguments as a string and tests `content is none`.
    deepseek = render(TOOL_TURNS, chat_template=fixture("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"))
    assert 'get_weather\n```json\n{"city": "Paris"}\n```' in deepseek


def test_caller_messages_are_not_modified() -> None:
    messages = copy.deepcopy([*TOOL_TURNS, {"role": "assistant", "content": "It is"}])
    before = json.dumps(messages)
    render(messages, preset="chatml", tools=TOOLS, continue_final_message=True)
    assert json.dumps(messages) == before


# ---------------------------------------------------------------------------- real templates

# Templates that need more than messages: what to pass, and why.
FIXTURE_EXTRAS: dict[str, dict] = {
    # Tool-use variants iterate over `tools` unconditionally.
    "CohereForAI-c4ai-command-r-plus-tool_use": {"tools": TOOLS},
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": {"tools": TOOLS},
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": {"tools": TOOLS},
    # Firefunction reads its function list (a JSON string) and the date from its own variables.
    "fireworks-ai-llama-3-firefunction-v2": {
        "template_kwargs": {"functions": json.dumps(TOOLS), "datetime": "2025-01-01"}
    },
}
# Templates that cannot render a plain conversation here at all: name -> reason.
FIXTURE_SKIPS: dict[str, str] = {}

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.jinja")) if FIXTURES.is_dir() else []


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")
def test_fixture_directory_is_populated() -> None:
    assert len(FIXTURE_NAMES) >= 50
    assert set(FIXTURE_EXTRAS) | set(FIXTURE_SKIPS) <= set(FIXTURE_NAMES)


@pytest.mark.parametrize("with_system", [True, False], ids=["system+user", "user"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_template_renders(name: str, with_system: bool) -> None:
    if name in FIXTURE_SKIPS:
        pytest.skip(FIXTURE_SKIPS[name])
    messages = [{"role": "user", "content": "What is 2+2? USER-MARK"}]
    if with_system:
        messages.insert(0, {"role": "system", "content": "Answer tersely. SYSTEM-MARK"})
    text = render(messages, chat_template=fixture(name), **FIXTURE_EXTRAS.get(name, {}))
    assert "What is 2+2? USER-MARK" in text
    if with_system:  # natively or folded into the user turn
        assert "Answer tersely. SYSTEM-MARK" in text
