"""The codec: round trips, the inline limit, and one clear error per kind of bad input."""

from __future__ import annotations

import base64
import random
import zlib

import pytest

from contract import codec
from contract.payload import MAX_SOURCES_BYTES
from tests.bombs import b64_bomb


def _py(**kw):
    return {"lang": "py", "main": "eval.py", "sources": {"eval.py": "print('hi')"}, **kw}


def _enc(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode()


def test_round_trip_is_exact():
    p = codec.validate(_py(tests=[{"size": 3, "seed": 1}], seed=7, mode="leaderboard"))
    assert codec.decode(codec.encode(p)) == p


def test_wire_format_is_base64_of_zlib_of_json():
    text = codec.encode(_py())
    import json

    assert json.loads(zlib.decompress(base64.b64decode(text)))["main"] == "eval.py"


def test_encode_refuses_payloads_over_the_inline_limit_naming_size_and_limit():
    noise = base64.b64encode(random.Random(1).randbytes(150_000)).decode()  # incompressible
    with pytest.raises(codec.PayloadTooLarge) as e:
        codec.encode(_py(sources={"eval.py": noise}))
    assert "96.0 KiB" in e.value.message
    assert e.value.limit == codec.INLINE_LIMIT and e.value.size > codec.INLINE_LIMIT
    assert str(e.value.size) in e.value.message
    # without a limit it encodes and decodes
    assert codec.decode(codec.encode(_py(sources={"eval.py": noise}), limit=None)).sources["eval.py"] == noise


def test_whitespace_inside_the_base64_is_tolerated():
    text = codec.encode(_py())
    wrapped = "\n".join(text[i : i + 20] for i in range(0, len(text), 20)) + "\n"
    assert codec.decode(wrapped).main == "eval.py"


CASES = [
    (None, "missing", "not set"),
    ("", "empty", "empty"),
    ("  \n\t ", "empty", "empty"),
    ("not base64!!", "base64", "base64"),
    ("abc", "base64", "base64"),
    ("päyload", "base64", "non-ASCII"),
    (base64.b64encode(b"hello world").decode(), "zlib", "zlib"),
    (base64.b64encode(zlib.compress(b'{"lang": "py"}')[:-4]).decode(), "zlib", "truncated"),
    (base64.b64encode(zlib.compress(b"{}") + b"junk").decode(), "zlib", "after the zlib stream"),
    (_enc(b"\xff\xfe\xfa"), "utf8", "UTF-8"),
    (_enc(b'{"lang": '), "json", "not JSON"),
    (_enc(b"[1, 2]"), "schema", "got an array"),
    (_enc(b'"py"'), "schema", "got a string"),
    (_enc(b"null"), "schema", "got null"),
    (_enc(b'{"main": "x"}'), "schema", "no 'lang'"),
    (_enc(b'{"lang": "rust"}'), "lang", "unknown lang 'rust'"),
    (_enc(b'{"lang": "py", "mode": "turbo"}'), "mode", "unknown mode 'turbo'"),
    (_enc(b"[" * 100_000 + b"]" * 100_000), "json", "nested too deeply"),
]


@pytest.mark.parametrize(("text", "code", "words"), CASES)
def test_each_bad_input_has_its_own_error(text, code, words):
    with pytest.raises(codec.PayloadError) as e:
        codec.decode(text)
    assert e.value.code == code
    assert words in e.value.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_py(tests="abc"), "tests: Input should be a valid list"),
        (_py(sources=["eval.py"]), "sources: Input should be a valid dictionary"),
        (_py(test_timeout=-5), "test_timeout: Input should be greater than 0"),
        (_py(test_timout=5), "test_timout: Extra inputs are not permitted"),
        (_py(main="missing.py"), "main 'missing.py' is not one of the sources"),
        (_py(sources={"eval.py": "x" * (MAX_SOURCES_BYTES + 1)}), "over the limit of 8 MiB"),
        ({"lang": "cu", "sources": {"a.cu": ""}, "defines": {"A B": "1"}}, "not a C identifier"),
        ({"lang": "cu", "sources": {"a.cu": ""}, "compile_flags": ["O3"]}, "must start with '-'"),
    ],
)
def test_schema_errors_name_the_field_and_the_reason(data, words):
    with pytest.raises(codec.PayloadError) as e:
        codec.validate(data)
    assert e.value.code == "schema"
    assert words in e.value.message


def test_bomb_is_refused_at_the_cap():
    with pytest.raises(codec.PayloadTooLarge) as e:
        codec.decode(b64_bomb(8 << 20), max_bytes=1 << 20)
    assert e.value.limit == 1 << 20
    # refused as soon as the cap is passed, not after expanding everything
    assert e.value.size <= (1 << 20) + 1


def test_payload_exactly_at_the_cap_is_accepted():
    data = codec.encode_raw(_py(), limit=None)
    size = len(zlib.decompress(base64.b64decode(data)))
    assert codec.decode(data, max_bytes=size).main == "eval.py"
    with pytest.raises(codec.PayloadTooLarge):
        codec.decode(data, max_bytes=size - 1)
