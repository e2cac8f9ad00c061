"""The Hermes tool instruction for templates without tools, and the tool-history helpers."""

from __future__ import annotations

import json

from mlx_textgen.chat.tools import (
    history_variants,
    prepare_tool_history,
    prepare_tools,
    short_call_id,
)
from mlx_textgen.parsers import parse_tool_calls
from mlx_textgen.parsers.prompting import (
    HERMES_PARSER,
    add_tool_prompt,
    hermes_history,
    tool_system_prompt,
)

from ._parser_cases import WEATHER_TOOLS

CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
HISTORY = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": "Sunny"},
]


def test_instruction_lists_every_function_and_the_call_format() -> None:
    text = tool_system_prompt(WEATHER_TOOLS)
    for tool in WEATHER_TOOLS:
        function = tool["function"]
        listed = json.dumps(
            {
                "name": function["name"],
                "description": function["description"],
                "parameters": function.get("parameters") or {"type": "object", "properties": {}},
            }
        )
        assert listed in text
    assert "<tool_call>" in text and '"arguments"' in text


def test_instruction_merges_into_the_system_message_or_adds_one() -> None:
    merged = add_tool_prompt(
        [{"role": "system", "content": "Be brief."}, HISTORY[0]], WEATHER_TOOLS
    )
    assert len(merged) == 2 and merged[0]["role"] == "system"
    assert merged[0]["content"].startswith(tool_system_prompt(WEATHER_TOOLS))
    assert merged[0]["content"].endswith("\n\nBe brief.")
    added = add_tool_prompt([HISTORY[0]], WEATHER_TOOLS)
    assert [m["role"] for m in added] == ["system", "user"]
    assert HISTORY[0] == {"role": "user", "content": "Weather?"}  # input left alone


def test_the_instruction_format_is_what_the_hermes_parser_reads() -> None:
    answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert HERMES_PARSER == "hermes"
    assert [c.name for c in parse_tool_calls(HERMES_PARSER, answer).calls] == ["get_weather"]


def test_hermes_history_folds_calls_and_results_into_plain_turns() -> None:
    folded = hermes_history([*HISTORY, {"role": "user", "content": "Thanks"}])
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert folded[1]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert folded[2]["content"] == "<tool_response>\nSunny\n</tool_response>\n\nThanks"


def test_prepare_history_names_tool_results_and_keeps_arguments_as_sent() -> None:
    prepared = prepare_tool_history(HISTORY)
    assert prepared[1]["content"] == ""
    assert prepared[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert prepared[2]["name"] == "get_weather"
    as_dict = prepare_tool_history(HISTORY, dict_arguments=True)
    assert as_dict[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    as_text = prepare_tool_history(as_dict, dict_arguments=False)
    assert json.loads(as_text[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert HISTORY[1]["content"] is None  # input left alone


def test_mistral_templates_get_stable_nine_character_ids() -> None:
    template = "{{ '[CALL_ID]' }}"
    prepared = prepare_tool_history(HISTORY, template)
    call_id = prepared[1]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum()
    assert prepared[2]["tool_call_id"] == call_id == short_call_id("call_abc123")
    assert prepare_tool_history(HISTORY, template) == prepared  # same prompt next turn
    assert short_call_id("abcDEF123") == "abcDEF123"
    assert prepare_tool_history(HISTORY)[1]["tool_calls"][0]["id"] == "call_abc123"


def test_history_variants_try_null_then_empty_content() -> None:
    variants = history_variants(HISTORY)
    assert [v[1]["content"] for v in variants] == [None, ""]
    plain = [{"role": "user", "content": "hi"}]
    assert history_variants(plain) == [plain]


def test_prepare_tools_fills_what_templates_read() -> None:
    tools = prepare_tools(WEATHER_TOOLS)
    ping = tools[1]["function"]
    assert ping["parameters"] == {"type": "object", "properties": {}}
    assert tools[0]["function"]["parameters"] == WEATHER_TOOLS[0]["function"]["parameters"]
    assert "parameters" not in WEATHER_TOOLS[1]["function"]
    assert prepare_tools(None) is None
