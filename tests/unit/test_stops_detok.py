from mlx_textgen.engine.detokenizer import IncrementalDetokenizer
from mlx_textgen.engine.stops import StopStringMatcher


def feed_all(m: StopStringMatcher, pieces: list[str]) -> str:
    out = []
    for p in pieces:
        out.append(m.feed(p))
        if m.stopped:
            return "".join(out)
    return "".join(out) + m.flush()


def test_stop_split_across_pieces_never_leaks():
    m = StopStringMatcher(["END"])
    emitted = [m.feed("hello E"), m.feed("N"), m.feed("D tail")]
    assert emitted == ["hello ", "", ""]
    assert m.stopped == "END"


def test_partial_then_not_a_stop_is_released():
    m = StopStringMatcher(["END"])
    assert feed_all(m, ["ab E", "x", "yz"]) == "ab Exyz"
    assert m.stopped is None


def test_earliest_stop_wins():
    m = StopStringMatcher(["cd", "b"])
    assert m.feed("abcd") == "a"
    assert m.stopped == "b"


def test_no_stops_passthrough():
    m = StopStringMatcher([])
    assert m.feed("x") == "x" and m.flush() == ""


class ByteTok:
    """Each id is one UTF-8 byte; decoding a split character yields U+FFFD like real tokenizers."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_detokenizer_holds_incomplete_utf8():
    text = "héllo 🌍 世界"
    d = IncrementalDetokenizer(ByteTok().decode)
    out = "".join(d.add(b) for b in text.encode()) + d.flush()
    assert out == text


def test_detokenizer_flush_emits_dangling_bytes():
    d = IncrementalDetokenizer(ByteTok().decode)
    partial = "🌍".encode()[:2]
    assert "".join(d.add(b) for b in partial) == ""
    assert d.flush() == "\ufffd"
