from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.server import ServerProcess

API_KEY = "test-key-1"
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def server(smollm2_gguf: str, cache_root) -> Iterator[ServerProcess]:
    """The default-model server most e2e tests share (started once: startup is the slow part)."""
    srv = ServerProcess(["--api-key", API_KEY, "--api-key", "second-key"], cache_root)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def aclient(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tokenizer(server: ServerProcess, cache_root):
    """The tokenizer the server built from the GGUF, loaded the way the server loads it."""
    from transformers import AutoTokenizer

    dirs = sorted((cache_root / "gguf").glob("*/tokenizer.json"))
    assert dirs, "the server should have imported the GGUF into the cache dir"
    return AutoTokenizer.from_pretrained(str(dirs[0].parent))
