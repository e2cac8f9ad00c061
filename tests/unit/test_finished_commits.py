"""When finished sequences are committed to the prompt cache: one per engine step, all
before admin calls and shutdown, and at once when a new prompt would reuse them."""

from __future__ import annotations

from types import SimpleNamespace

from mlx_textgen.engine.caching import EngineCache, reuses


class Recording(EngineCache):
    """The engine's cache calls with the manager left out: commits are recorded."""

    def __init__(self) -> None:
        super().__init__(None)
        self.manager = SimpleNamespace(options=SimpleNamespace(min_tokens=4), close=lambda: None)
        self.committed: list[list[int]] = []

    def fingerprint(self, info):
        return "fp"

    def commit(self, info, tokens, cache, boundaries):
        assert boundaries == [len(tokens)]
        self.committed.append(tokens)


def test_reuses_needs_a_long_enough_prefix_past_what_is_stored():
    done = [1, 2, 3, 4, 5, 6, 7, 8]  # prompt 1..5 (stored), completion 6..8
    assert reuses([1, 2, 3, 4, 5, 6, 7, 8, 9], done, stored=5, min_tokens=4)  # the next turn
    assert reuses([1, 2, 3, 4, 5, 6, 0], done, stored=5, min_tokens=4)
    assert not reuses([1, 2, 3, 4, 5, 0], done, stored=5, min_tokens=4)  # only the stored prompt
    assert reuses([1, 2, 3, 4, 5, 0], done, stored=0, min_tokens=4)  # its prompt was never stored
    assert not reuses([1, 2, 3, 0], done, stored=0, min_tokens=4)  # too short to be stored
    assert not reuses([9, 1, 2, 3, 4, 5], done, stored=0, min_tokens=4)


def test_one_commit_per_step_oldest_first_and_more_over_the_backlog():
    c = Recording()
    for i in range(5):
        c.finished(None, [i] * 8, [], stored=0)
    c.commit_finished(backlog=16)
    assert c.committed == [[0] * 8] and c.has_finished
    c.commit_finished(backlog=2)  # 4 waiting: two go
    assert c.committed == [[i] * 8 for i in range(3)]
    c.flush()
    assert c.committed == [[i] * 8 for i in range(5)] and not c.has_finished


def test_a_prompt_that_reuses_a_waiting_sequence_commits_it_first():
    c = Recording()
    c.finished(None, [1, 2, 3, 4, 5, 6, 7, 8], [], stored=5)
    c.finished(None, [9, 9, 9, 9, 9, 9], [], stored=0)
    c.commit_reused([1, 2, 3, 4, 5, 0])  # shares only the stored prompt: nothing to gain
    assert c.committed == []
    c.commit_reused([1, 2, 3, 4, 5, 6, 7, 8, 10, 11])
    assert c.committed == [[1, 2, 3, 4, 5, 6, 7, 8]]
    c.close()  # shutdown commits what still waits
    assert c.committed[-1] == [9] * 6 and not c.has_finished


def test_nothing_waits_when_the_cache_is_off():
    c = EngineCache(None)
    c.finished(SimpleNamespace(), [1, 2, 3], [], stored=0)
    assert not c.has_finished
