"""Structured output: constraints compiled with llguidance and applied as token masks.

`forms` turns a request's constraint fields into one llguidance grammar (HTTP side);
`compiler` compiles grammars once per tokenizer and hands out matchers; `constraint` is
the small per-sequence interface the engine drives; `mask` applies it to logits with
portable MLX operations (engine side, the only module here that imports MLX).
"""
