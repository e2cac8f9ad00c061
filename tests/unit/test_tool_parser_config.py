"""The `tool_parser` model key: accepted names are the registry's, others fail at load."""

from __future__ import annotations

import pytest

from mlx_textgen.config import TOOL_PARSERS, ConfigError, parse_config
from mlx_textgen.config_template import default_config_text
from mlx_textgen.parsers import TOOL_FORMATS


def test_the_key_lists_the_registrys_formats():
    assert sorted(TOOL_PARSERS) == sorted(TOOL_FORMATS)
    assert "tool_parser" in default_config_text(1)


def test_tool_parser_is_read_and_checked():
    text = "model_configs:\n- model_id_or_path: m\n  tool_parser: {}\n"
    assert parse_config(text.format("Mistral")).model_configs[0].tool_parser == "mistral"
    assert parse_config(text.format("null")).model_configs[0].tool_parser is None
    with pytest.raises(ConfigError, match="tool_parser"):
        parse_config(text.format("nonsense"))
