"""The response cache: keys follow the request, entries are written atomically, bad ones are misses."""

from __future__ import annotations

from pathlib import Path

from awm.builder.synth.cache import ResponseCache, request_key

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}


def test_key_ignores_dict_order_and_follows_every_parameter() -> None:
    same = {"temperature": 0.7, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_key("chat", REQUEST) == request_key("chat", same)
    for changed in ({**REQUEST, "model": "n"}, {**REQUEST, "temperature": 0.0},
                    {**REQUEST, "messages": [{"role": "user", "content": "hi!"}]}, {**REQUEST, "max_tokens": 5}):
        assert request_key("chat", changed) != request_key("chat", REQUEST)
    assert request_key("embeddings", REQUEST) != request_key("chat", REQUEST)


def test_put_then_get_and_nothing_half_written(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    key = request_key("chat", REQUEST)
    assert cache.get(key) is None
    assert cache.count() == 0
    cache.put(key, REQUEST, {"text": "hello"})
    assert cache.get(key) == {"text": "hello"}
    assert cache.count() == 1
    assert [p.name for p in cache.path(key).parent.iterdir()] == [f"{key}.json"]  # no temporary left


def test_unreadable_entry_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    key = request_key("chat", REQUEST)
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_text('{"response": {"text": "cut')
    assert cache.get(key) is None
    cache.put(key, REQUEST, {"text": "whole"})
    assert cache.get(key) == {"text": "whole"}


def test_read_and_write_switches(tmp_path: Path) -> None:
    key = request_key("chat", REQUEST)
    ResponseCache(tmp_path, write=False).put(key, REQUEST, {"text": "x"})
    assert ResponseCache(tmp_path).get(key) is None
    ResponseCache(tmp_path).put(key, REQUEST, {"text": "x"})
    assert ResponseCache(tmp_path, read=False).get(key) is None
    assert ResponseCache(tmp_path).get(key) == {"text": "x"}
