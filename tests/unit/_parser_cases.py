# ruff: noqa: ISC004 - long model texts are split across lines inside the case tuples
"""Model text in every tool-call format, with the content and calls it must parse to."""

from __future__ import annotations

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "ping", "description": "No arguments"}},
]

P = {"city": "Paris"}
P3 = {"city": "Paris", "days": 3}
R = {"city": "Rome"}

# (format, model text, content, [(name, arguments)])
CASES: list[tuple[str, str, str, list[tuple[str, dict]]]] = [
    ("hermes", "Hello there.", "Hello there.", []),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "",
        [("get_weather", P)],
    ),
    (
        "hermes",
        'Let me check.\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        '\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
        "Let me check.",
        [("get_weather", P), ("get_weather", R)],
    ),
    (
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>'
        " Done.",
        "Done.",
        [("get_weather", P)],
    ),
    ("hermes", '<tool_call>{"name": "ping"}</tool_call>', "", [("ping", {})]),
    ("hermes", "a < b and <tool_ is not a tag", "a < b and <tool_ is not a tag", []),
    (
        "qwen3_coder",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", P3)],
    ),
    (
        "qwen3_coder",
        "Sure.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew\nYork\n"
        "</parameter>\n</function>\n</tool_call><tool_call>\n<function=ping>\n</function>\n</tool_call>",
        "Sure.",
        [("get_weather", {"city": "New\nYork"}), ("ping", {})],
    ),
    (
        "llama3_json",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "",
        [("get_weather", P)],
    ),
    (
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_weather", "parameters": {"city": "Rome"}}',
        "",
        [("get_weather", P), ("get_weather", R)],
    ),
    ("llama3_json", '{"answer": 42}', '{"answer": 42}', []),
    ("llama3_json", 'The JSON is {"name": "x"}.', 'The JSON is {"name": "x"}.', []),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "Rome"}}]',
        "",
        [("get_weather", P), ("get_weather", R)],
    ),
    (
        "mistral",
        'Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_weather'
        '[CALL_ID]a1b2c3d4e[ARGS]{"city": "Rome"}',
        "Checking.",
        [("get_weather", P), ("get_weather", R)],
    ),
    (
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}get_weather[ARGS]{"city": "Rome"}',
        "",
        [("get_weather", P), ("get_weather", R)],
    ),
    (
        "pythonic",
        "[get_weather(city=\"Paris\", days=3), get_weather(city='Rome')]",
        "",
        [("get_weather", P3), ("get_weather", R)],
    ),
    (
        "pythonic",
        "<|tool_call_start|>[ping()]<|tool_call_end|>All set.",
        "All set.",
        [("ping", {})],
    ),
    ("pythonic", "[1, 2] are numbers", "[1, 2] are numbers", []),
    (
        "glm4",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>",
        "",
        [("get_weather", P3)],
    ),
    (
        "kimi_k2",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_call_begin|>'
        'functions.get_weather:1<|tool_call_argument_begin|>{"city": "Rome"}<|tool_call_end|>'
        "<|tool_calls_section_end|>",
        "",
        [("get_weather", P), ("get_weather", R)],
    ),
    (
        "minimax_m2",
        'Ok.<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
        '</parameter>\n<parameter name="days">3</parameter>\n</invoke>\n</minimax:tool_call>',
        "Ok.",
        [("get_weather", P3)],
    ),
    (
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>Paris, {France}<|"|>,days:3}<tool_call|>',
        "",
        [("get_weather", {"city": "Paris, {France}", "days": 3})],
    ),
    (
        "function_gemma",
        "<start_function_call>call:get_weather{city:<escape>Paris<escape>}<end_function_call>",
        "",
        [("get_weather", P)],
    ),
    (
        "deepseek_v3",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "",
        [("get_weather", P)],
    ),
    (
        "deepseek_v3",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
        '{"city": "Rome"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "",
        [("get_weather", R)],
    ),
    (
        "gpt_oss",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city": "Paris"}<|call|>',
        "",
        [("get_weather", P)],
    ),
    ("gpt_oss", "<|channel|>final<|message|>It is sunny.<|return|>", "It is sunny.", []),
    (
        "gpt_oss",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
        '{"city": "Rome"}',
        "",
        [("get_weather", R)],
    ),
]

# (format, model text, the malformed region reported) : returned as content, never raised.
MALFORMED: list[tuple[str, str, str]] = [
    (
        "hermes",
        'Hi <tool_call>{"name": broken}</tool_call> there',
        '<tool_call>{"name": broken}</tool_call>',
    ),
    (
        "hermes",
        'Cut <tool_call>{"name": "get_weather", "argum',
        '<tool_call>{"name": "get_weather", "argum',
    ),
    (
        "hermes",
        '<tool_call>{"arguments": {}}</tool_call>',
        '<tool_call>{"arguments": {}}</tool_call>',
    ),
    (
        "qwen3_coder",
        "<tool_call>\nno function here\n</tool_call>",
        "<tool_call>\nno function here\n</tool_call>",
    ),
    (
        "mistral",
        "[TOOL_CALLS]get_weather[ARGS]{bad json}",
        "[TOOL_CALLS]get_weather[ARGS]{bad json}",
    ),
    ("mistral", "[TOOL_CALLS] what?", "[TOOL_CALLS] what?"),
    (
        "llama3_json",
        '<|python_tag|>brave_search.call(query="x")',
        '<|python_tag|>brave_search.call(query="x")',
    ),
    ("pythonic", "[get_weather(city=Paris)]", "[get_weather(city=Paris)]"),
    (
        "kimi_k2",
        "<|tool_calls_section_begin|>junk<|tool_calls_section_end|>",
        "<|tool_calls_section_begin|>junk<|tool_calls_section_end|>",
    ),
    (
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>Paris}<tool_call|>',
        '<|tool_call>call:get_weather{city:<|"|>Paris}<tool_call|>',
    ),
    (
        "gpt_oss",
        "<|channel|>commentary to=functions.get_weather<|message|>{oops<|call|>",
        "<|channel|>commentary to=functions.get_weather<|message|>{oops<|call|>",
    ),
]
