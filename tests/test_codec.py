"""The codec: round trips, the inline limit, and one clear error per kind of bad input."""

from __future__ import annotations

import base64
import json
import random
import zlib

import pytest

from contract import codec
from contract.payload import MAX_SOURCES_BYTES, dump_payload
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


# --- the zlib level, chosen by what the inline limit needs ----------------------------------


def _words(n: int, seed: int = 0) -> str:
    """Source-like text of random words: level 6 packs it ~12 % tighter than level 1."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(2000)]
    text = ""
    while len(text) < n:
        text += "    " + " = ".join(rng.choices(words, k=3)) + f"  # {rng.random():.6f}\n"
    return text[:n]


def _json(data) -> bytes:
    model = codec.validate(data)
    return json.dumps(dump_payload(model), separators=(",", ":"), ensure_ascii=False).encode()


def _b64len(n: int) -> int:
    return 4 * -(-n // 3)  # base64: 4 characters per 3 bytes, the last group padded


def _stored(text: str) -> bool:
    """The first deflate block of the payload's zlib stream is a stored (uncompressed) one."""
    return base64.b64decode(text[:8])[2] & 0x06 == 0


def test_an_inline_payload_that_fits_at_level_1_is_level_1():
    data = _py(sources={"eval.py": _words(50_000)})
    text = codec.encode(data)
    assert base64.b64decode(text) == zlib.compress(_json(data), 1)
    assert codec.decode(text) == codec.validate(data)


def test_a_payload_only_level_6_can_fit_inline_still_goes_inline_at_level_6():
    lo, hi = 1_000, 400_000  # the largest source whose level-6 encoding fits the inline limit
    while hi - lo > 64:
        mid = (lo + hi) // 2
        fits = _b64len(len(zlib.compress(_json(_py(sources={"eval.py": _words(mid)})), 6)))
        lo, hi = (mid, hi) if fits <= codec.INLINE_LIMIT else (lo, mid)
    data = _py(sources={"eval.py": _words(lo)})
    raw = _json(data)
    assert _b64len(len(zlib.compress(raw, 1))) > codec.INLINE_LIMIT  # level 1 would not fit
    text = codec.encode(data)
    assert len(text) <= codec.INLINE_LIMIT
    assert base64.b64decode(text) == zlib.compress(raw, 6)  # what every payload was before
    assert codec.decode(text) == codec.validate(data)


def test_a_payload_that_cannot_go_inline_is_refused_after_part_of_a_level_6_pass(monkeypatch):
    data = _py(sources={"eval.py": _words(1 << 20)})
    raw = _json(data)
    fed: list[int] = []
    real = zlib.compressobj

    class Counting:
        def __init__(self, level):
            self.c = real(level)

        def compress(self, chunk):
            fed.append(len(chunk))
            return self.c.compress(chunk)

        def flush(self):
            return self.c.flush()

    monkeypatch.setattr(codec.zlib, "compressobj", Counting)
    with pytest.raises(codec.PayloadTooLarge) as e:
        codec.encode(data)
    assert 0 < sum(fed) < len(raw) // 2  # the level-6 try stopped once it passed the limit
    # the size named is that of the level-1 encoding: over the limit, as it did not fit
    assert e.value.size == _b64len(len(zlib.compress(raw, 1))) > codec.INLINE_LIMIT
    assert e.value.code == "too_large" and str(e.value.size) in e.value.message


def test_without_a_limit_the_payload_is_stored_and_decodes_exactly():
    data = _py(sources={"eval.py": _words(300_000), "ü.py": "# größer — µs\n"})
    text = codec.encode(data, limit=None)
    assert _stored(text)
    assert zlib.decompress(base64.b64decode(text)) == _json(data)
    assert codec.decode(text) == codec.validate(data)


@pytest.mark.parametrize("mib", [8, 12])
def test_without_a_limit_a_payload_at_the_cap_still_fits_the_payload_file_cap(tmp_path, mib):
    """Stored blocks add 5 bytes each: where that would pass read_payload_file's margin for a
    payload exactly at the decompressed cap, the codec compresses it (level 1) instead."""
    data = {"lang": "py", "pad": _words(mib << 20)}
    raw = json.dumps(data, separators=(",", ":")).encode()
    text = codec.encode_raw(data, limit=None)
    assert len(text) <= codec.payload_file_limit(len(raw))
    assert _stored(text) == (mib == 8)  # 8 MiB: stored blocks still fit the margin
    f = tmp_path / "p.b64"
    f.write_text(text)
    read = codec.read_payload_file(str(f), max_bytes=len(raw))  # the cap: exactly this payload
    assert codec.decode_json(read, max_bytes=len(raw)) == data
