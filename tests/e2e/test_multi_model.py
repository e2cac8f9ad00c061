"""Two models behind one endpoint from a config file: a GGUF file and a local MLX model dir.
Requests for the model not in memory wait for the running ones, then the server swaps."""

from __future__ import annotations

import asyncio

import openai
import pytest
import yaml

from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def two_models(smollm2_gguf, cache_root, tmp_path_factory):
    from mlx_textgen.models.gguf import import_gguf

    model_dir = import_gguf(smollm2_gguf, cache_root, float_weights=True, progress=False)
    cfg = {
        "model_configs": [
            {"model_id_or_path": smollm2_gguf, "model_name": "from-gguf"},
            {"model_id_or_path": str(model_dir), "model_name": "from-dir", "extra_stop_words": ["\n"]},
        ]
    }
    path = tmp_path_factory.mktemp("cfg") / "model_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    srv = ServerProcess(["--config-file", str(path)], cache_root)
    yield srv
    srv.stop()


def test_lists_both_and_swaps(two_models):
    client = openai.OpenAI(base_url=f"{two_models.base_url}/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["from-gguf", "from-dir"]
    texts = {}
    for name in ("from-gguf", "from-dir", "from-gguf"):
        r = client.completions.create(model=name, prompt="The capital of France is", max_tokens=4, temperature=0)
        assert r.model == name
        texts.setdefault(name, r.choices[0].text)
        assert "Paris" in r.choices[0].text
    r = client.completions.create(model="from-dir", prompt="Line one\nLine two", max_tokens=8,
                                  temperature=0, extra_body={"ignore_eos": True})
    assert "\n" not in r.choices[0].text and r.choices[0].finish_reason == "stop"  # extra_stop_words


async def test_concurrent_requests_for_both_models(two_models):
    client = openai.AsyncOpenAI(base_url=f"{two_models.base_url}/v1", api_key="x", max_retries=0)
    rs = await asyncio.gather(*[
        client.completions.create(model=m, prompt="The capital of France is", max_tokens=3, temperature=0)
        for m in ("from-gguf", "from-dir", "from-gguf", "from-dir")
    ])
    assert [r.model for r in rs] == ["from-gguf", "from-dir", "from-gguf", "from-dir"]
    # Same weights, same greedy answer (from-dir stops at its extra stop word "\n").
    assert len({r.choices[0].text.rstrip("\n") for r in rs}) == 1
