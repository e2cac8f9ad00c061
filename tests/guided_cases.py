"""JSON schemas, regexes and a grammar that the structured-output tests sample under.

Schemas cover what clients send: nested objects, arrays with min/max items, enums,
anyOf/oneOf, $ref/$defs, string patterns and formats, number ranges, required and optional
properties, additionalProperties false, pydantic's `title` keys and Optional as anyOf-null.
Free strings carry a maxLength so that a 135M model at temperature 1 finishes in a test's
token budget (the constraint holds either way; the budget is what it bounds).
"""

from __future__ import annotations

S = {"type": "string", "maxLength": 12}

SCHEMAS: dict[str, dict] = {
    "flat": {"type": "object", "properties": {"name": S, "age": {"type": "integer"}},
             "required": ["name", "age"]},
    "closed": {"type": "object", "properties": {"city": S}, "required": ["city"],
               "additionalProperties": False},
    "integer_range": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3,
                      "maximum": 9}}, "required": ["n"], "additionalProperties": False},
    "number_range": {"type": "object", "properties": {"x": {"type": "number", "minimum": -1.5,
                     "exclusiveMaximum": 2}}, "required": ["x"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
             "required": ["color"], "additionalProperties": False},
    "const": {"type": "object", "properties": {"kind": {"const": "point"}, "v": {"type": "integer"}},
              "required": ["kind", "v"], "additionalProperties": False},
    "boolean_null": {"type": "object", "properties": {"ok": {"type": "boolean"}, "none": {"type": "null"}},
                     "required": ["ok", "none"], "additionalProperties": False},
    "array_bounds": {"type": "object", "properties": {"tags": {"type": "array", "items": S,
                     "minItems": 1, "maxItems": 3}}, "required": ["tags"], "additionalProperties": False},
    "array_of_ints": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99},
                      "minItems": 2, "maxItems": 4},
    "nested": {"type": "object", "properties": {"user": {"type": "object", "properties": {
               "name": S, "address": {"type": "object", "properties": {"zip": {"type": "string",
               "pattern": "^[0-9]{5}$"}}, "required": ["zip"], "additionalProperties": False}},
               "required": ["name", "address"], "additionalProperties": False}},
               "required": ["user"], "additionalProperties": False},
    "array_of_objects": {"type": "object", "properties": {"items": {"type": "array", "maxItems": 2,
                         "items": {"type": "object", "properties": {"id": {"type": "integer"},
                         "qty": {"type": "integer", "minimum": 1}}, "required": ["id", "qty"],
                         "additionalProperties": False}}}, "required": ["items"],
                         "additionalProperties": False},
    "pattern": {"type": "object", "properties": {"code": {"type": "string",
                "pattern": "^[A-Z]{3}-[0-9]{2}$"}}, "required": ["code"], "additionalProperties": False},
    "format_date": {"type": "object", "properties": {"day": {"type": "string", "format": "date"}},
                    "required": ["day"], "additionalProperties": False},
    "format_time": {"type": "object", "properties": {"at": {"type": "string", "format": "time"}},
                    "required": ["at"], "additionalProperties": False},
    "format_uuid": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}},
                    "required": ["id"], "additionalProperties": False},
    "format_ipv4": {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"}},
                    "required": ["ip"], "additionalProperties": False},
    "string_length": {"type": "object", "properties": {"word": {"type": "string", "minLength": 2,
                      "maxLength": 5}}, "required": ["word"], "additionalProperties": False},
    "optional_props": {"type": "object", "properties": {"a": {"type": "integer"}, "b": S, "c": S},
                       "required": ["a"], "additionalProperties": False},
    "anyof": {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer"}, S]}},
              "required": ["v"], "additionalProperties": False},
    "optional_null": {"title": "Person", "type": "object", "properties": {
                      "name": {"title": "Name", **S},
                      "age": {"title": "Age", "anyOf": [{"type": "integer"}, {"type": "null"}]}},
                      "required": ["name", "age"], "additionalProperties": False},
    "oneof_disjoint": {"type": "object", "properties": {"shape": {"oneOf": [
                       {"type": "object", "properties": {"kind": {"const": "circle"},
                        "r": {"type": "integer", "minimum": 1}}, "required": ["kind", "r"],
                        "additionalProperties": False},
                       {"type": "object", "properties": {"kind": {"const": "square"},
                        "side": {"type": "integer", "minimum": 1}}, "required": ["kind", "side"],
                        "additionalProperties": False}]}}, "required": ["shape"],
                       "additionalProperties": False},
    "refs": {"$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"},
             "y": {"type": "integer"}}, "required": ["x", "y"], "additionalProperties": False}},
             "type": "object", "properties": {"a": {"$ref": "#/$defs/Point"},
             "b": {"$ref": "#/$defs/Point"}}, "required": ["a", "b"], "additionalProperties": False},
    "oneof_refs": {"$defs": {
                   "Cat": {"type": "object", "properties": {"pet": {"const": "cat"}, "lives": {
                           "type": "integer", "minimum": 1, "maximum": 9}}, "required": ["pet", "lives"],
                           "additionalProperties": False},
                   "Dog": {"type": "object", "properties": {"pet": {"const": "dog"}, "good": {
                           "type": "boolean"}}, "required": ["pet", "good"], "additionalProperties": False}},
                   "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
    "recursive": {"$defs": {"Node": {"type": "object", "properties": {"v": {"type": "integer"},
                  "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                  "required": ["v", "next"], "additionalProperties": False}},
                  "$ref": "#/$defs/Node"},
    "open_object": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                    "maxProperties": 2},
    "top_level_enum": {"enum": ["yes", "no", 3, None]},
    "unique_key_names": {"type": "object", "properties": {"first name": S, "x\"y": {"type": "integer"}},
                         "required": ["first name", "x\"y"], "additionalProperties": False},
}

REGEXES = [
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    r"(yes|no|maybe)",
    r"[a-z]{1,10}@[a-z]{1,10}\.(com|org)",
    r"\(\d{3}\) \d{3}-\d{4}",
    r"[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8})?",
]

CHOICES = ["C++", "a.b", "Rust", "x|y"]

ARITHMETIC_LARK = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
"""
