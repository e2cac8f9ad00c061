"""Tool-call and reasoning parsers (pure Python: this package never imports MLX).

One small module per format, found through ``registry``; ``detect`` picks a format from a chat
template; ``prompting`` builds a Hermes-style tool instruction for templates without tools;
``grammars`` gives llguidance Lark grammars that enforce a valid call.
"""

from .detect import detect_reasoning_parser, detect_tool_parser, template_supports_tools
from .reasoning import ReasoningFormat, ReasoningParser
from .registry import (
    REASONING_FORMATS,
    TOOL_FORMATS,
    UnknownParserError,
    get_reasoning_format,
    get_tool_format,
    make_reasoning_parser,
    make_tool_parser,
    parse_tool_calls,
)
from .response import ResponseDelta, ResponseParser, make_response_parser
from .tool_base import ToolCallParser, ToolFormat
from .types import (
    Delta,
    ParsedToolCalls,
    ReasoningDelta,
    ToolCall,
    ToolCallDelta,
    accumulate,
)

__all__ = [
    "REASONING_FORMATS",
    "TOOL_FORMATS",
    "Delta",
    "ParsedToolCalls",
    "ReasoningDelta",
    "ReasoningFormat",
    "ReasoningParser",
    "ResponseDelta",
    "ResponseParser",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallParser",
    "ToolFormat",
    "UnknownParserError",
    "accumulate",
    "detect_reasoning_parser",
    "detect_tool_parser",
    "get_reasoning_format",
    "get_tool_format",
    "make_reasoning_parser",
    "make_response_parser",
    "make_tool_parser",
    "parse_tool_calls",
    "template_supports_tools",
]
