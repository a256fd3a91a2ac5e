"""The payload codec: ``base64(zlib(json))``, the field's wire format for ``SUBMISSION_PAYLOAD``.

Decoding is defensive: input is hostile until validated. Decompression streams with a hard cap
on the output, so a zlib bomb is refused after at most ``max_bytes`` with bounded memory, and each
way a payload can be wrong has its own error code and message.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from contract.payload import LANGS, MODEL_FOR_LANG, MODES, AnyPayload, dump_payload

#: Largest encoded payload that may travel inline in one environment variable. Linux limits one
#: env string to 128 KiB (MAX_ARG_STRLEN); this leaves room for the name and other variables.
INLINE_LIMIT = 96 * 1024
#: Default cap on the decompressed JSON.
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024
#: The setting that overrides it (a host's or the runner's environment).
MAX_BYTES_ENV = "KITEBENCH_MAX_PAYLOAD_BYTES"
_CHUNK = 64 * 1024
_STEP = 1024 * 1024

# The zlib level is chosen by what the inline limit needs; the wire format (base64 of a zlib
# stream) and every decoder stay the same whatever the level.
#
# - With a limit (the payload travels inline in an environment variable): level 1 when its output
#   fits (most payloads; 3x faster than level 6 on source text, and inline is inline), else
#   level 6 (zlib's default, what every payload used before) for the payloads only level 6 can
#   fit. That try stops as soon as its output passes the limit, so a payload that cannot go
#   inline does not pay for a whole level-6 pass (the 1 MiB benchmark payload: a fifth of one;
#   a 100 MiB inline model archive: milliseconds where it took seconds).
# - Without a limit (the local backend's stdin, KITEBENCH_PAYLOAD_FILE): stored, no compression
#   (level 0). Such a payload goes through a pipe or a local file, where a 2-4x larger text costs
#   microseconds; level 6's ~20 % smaller output than level 1 buys nothing there, and level 1
#   itself costs ~12 ms per MiB, more than the whole round trip of a stored payload. A stored
#   stream grows by 5 bytes per block (64 KiB at most), so where that would pass
#   read_payload_file's margin over the text of a payload at the cap (a stored payload of
#   ~9.5 MiB and more), level 1 is used: it never grows JSON text, and no cap moves.
_LEVEL_SMALL = 1
_LEVEL_FIT = 6

#: What the codec hands out and takes (one of the contract's payload models).
Payload = AnyPayload


class PayloadError(ValueError):
    """A payload that cannot be used. ``code`` names the kind of problem:

    ``missing``, ``empty``, ``base64``, ``zlib``, ``too_large``, ``utf8``, ``json``, ``schema``,
    ``lang``, ``mode``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def stage(self) -> str:
        """The failure stage in result.json: the bytes (decode) or their meaning (validate)."""
        return "validate" if self.code in ("schema", "lang", "mode") else "decode"


class PayloadTooLarge(PayloadError):
    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(
            "too_large", f"{what} is {format_size(size)} ({size} bytes), over the limit of {format_size(limit)}"
        )
        self.size = size
        self.limit = limit


def format_size(n: int) -> str:
    """Bytes as '96.0 KiB' (limits and sizes in error messages)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------------


def encode(payload: Payload | dict[str, Any], *, limit: int | None = INLINE_LIMIT) -> str:
    """Validate and encode a payload. Refuses results over ``limit`` bytes (``None``: no limit)
    with :class:`PayloadTooLarge`; the zlib level follows the limit (see ``_LEVEL_FIT``)."""
    model = payload if isinstance(payload, BaseModel) else validate(payload)
    return encode_raw(dump_payload(model), limit=limit)


def encode_raw(data: Any, *, limit: int | None = INLINE_LIMIT) -> str:
    """Encode any JSON data without validating it (tests and tooling). Over ``limit``, the
    :class:`PayloadTooLarge` names the size of the level-1 encoding (the level-6 try stops at
    the limit)."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if limit is None:
        stored = zlib.compress(raw, 0)
        if _b64len(len(stored)) <= payload_file_limit(len(raw)):
            return _b64(stored)
        return _b64(zlib.compress(raw, _LEVEL_SMALL))
    # base64 turns each 3 bytes into 4 characters: the compressed bytes that fit ``limit``
    budget = limit // 4 * 3
    small = zlib.compress(raw, _LEVEL_SMALL)
    if len(small) <= budget:
        return _b64(small)
    fitted = _compress_within(raw, _LEVEL_FIT, budget)
    if fitted is not None:
        return _b64(fitted)
    # the size of the level-1 encoding: over the limit, as it did not fit
    raise PayloadTooLarge(_b64len(len(small)), limit, "the encoded payload")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64len(n: int) -> int:
    """The length of the base64 text of ``n`` bytes."""
    return 4 * -(-n // 3)


def _compress_within(raw: bytes, level: int, budget: int) -> bytes | None:
    """``zlib.compress(raw, level)`` if its output is at most ``budget`` bytes, else None, found
    out after compressing only as much of ``raw`` as it takes to pass the budget."""
    c = zlib.compressobj(level)
    view = memoryview(raw)
    parts: list[bytes] = []
    size = 0
    for i in range(0, len(raw), _CHUNK):
        part = c.compress(view[i : i + _CHUNK])
        size += len(part)
        if size > budget:
            return None
        parts.append(part)
    part = c.flush()
    if size + len(part) > budget:
        return None
    parts.append(part)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------


def decompress(text: str | bytes | None, *, max_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """base64 → zlib → bytes, refusing more than ``max_bytes`` of output."""
    if text is None:
        raise PayloadError("missing", "no payload: SUBMISSION_PAYLOAD is not set")
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise PayloadError("base64", "payload is not base64: it has non-ASCII characters") from None
    if not text.strip():
        raise PayloadError("empty", "payload is empty")
    try:
        compressed = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        # line breaks or spaces from a copy-paste are tolerated: the strict decoder refused them,
        # so without them (a copy: only for such a payload) the text is decoded again
        try:
            compressed = binascii.a2b_base64(b"".join(text.split()), strict_mode=True)
        except (binascii.Error, ValueError) as e:
            raise PayloadError("base64", f"payload is not valid base64 ({e})") from None

    d = zlib.decompressobj()
    # Output is kept as a list of chunks: no over-allocation while growing, and a bomb is refused
    # before anything is joined, so peak memory stays near ``max_bytes``.
    parts: list[bytes] = []
    size = 0
    view = memoryview(compressed)
    try:
        for i in range(0, len(compressed), _CHUNK):
            chunk: bytes | memoryview = view[i : i + _CHUNK]
            while chunk:
                # max_length bounds each step (small steps: no large transient buffers) and
                # never lets the output pass the cap by more than one byte.
                part = d.decompress(chunk, min(_STEP, max_bytes + 1 - size))
                parts.append(part)
                size += len(part)
                if size > max_bytes:
                    raise PayloadTooLarge(size, max_bytes, "the decompressed payload")
                chunk = d.unconsumed_tail
    except zlib.error as e:
        raise PayloadError("zlib", f"payload is not zlib data ({e})") from None
    if not d.eof:
        raise PayloadError("zlib", "payload is not zlib data (truncated stream)")
    if d.unused_data:
        raise PayloadError("zlib", f"payload has {len(d.unused_data)} bytes after the zlib stream")
    return b"".join(parts)


def max_bytes_from(env: Mapping[str, str]) -> int:
    """The decompression cap ``env`` sets (:data:`MAX_BYTES_ENV`), else the default. A value that
    is not a positive integer is a configuration error (ValueError), never a bad payload."""
    raw = env.get(MAX_BYTES_ENV)
    if not raw:
        return DEFAULT_MAX_DECOMPRESSED
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_BYTES_ENV} must be a positive integer, got {raw!r}")
    return value


def payload_file_limit(max_bytes: int) -> int:
    """The largest payload file :func:`read_payload_file` reads for a cap of ``max_bytes``."""
    return max_bytes * 4 // 3 + 1024


def read_payload_file(path: str, *, max_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """An encoded payload from a file (for payloads too big for one env string). The encoded text
    of a payload under the cap is at most ~4/3 of it (base64 of incompressible data)."""
    limit = payload_file_limit(max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise PayloadError("missing", f"cannot read payload file {path}: {e.strerror}") from None
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit, "the payload file")
    return data


def decode_json(text: str | bytes | None, *, max_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> Any:
    """base64 → zlib → UTF-8 → JSON, no schema check."""
    raw = decompress(text, max_bytes=max_bytes)
    try:
        doc = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError("utf8", f"payload is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        return json.loads(doc)
    except json.JSONDecodeError as e:
        raise PayloadError("json", f"payload is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise PayloadError("json", "payload is not usable JSON (nested too deeply)") from None


def decode(text: str | bytes | None, *, max_bytes: int = DEFAULT_MAX_DECOMPRESSED) -> Payload:
    """Decode and validate ``SUBMISSION_PAYLOAD`` into a payload model."""
    return validate(decode_json(text, max_bytes=max_bytes))


def validate(data: Any) -> Payload:
    """Check decoded JSON against the contract, with one clear error."""
    if not isinstance(data, dict):
        raise PayloadError("schema", f"payload must be a JSON object, got {_json_type(data)}")
    lang = data.get("lang")
    if lang is None:
        raise PayloadError("schema", "payload has no 'lang' (expected one of: " + ", ".join(LANGS) + ")")
    if lang not in LANGS:
        raise PayloadError("lang", f"unknown lang {_short(lang)} (expected one of: {', '.join(LANGS)})")
    mode = data.get("mode", "test")
    if mode not in MODES:
        raise PayloadError("mode", f"unknown mode {_short(mode)} (expected one of: {', '.join(MODES)})")
    try:
        return MODEL_FOR_LANG[lang].model_validate(data)
    except ValidationError as e:
        raise PayloadError("schema", "payload does not match the contract: " + describe_errors(e)) from None


def describe_errors(e: ValidationError, limit: int = 3) -> str:
    """``field.path: reason`` for the first few errors of a ValidationError."""
    parts = []
    errors = e.errors(include_url=False)
    for err in errors[:limit]:
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in LANGS:  # the union branch; the lang is already known
            loc = loc[1:]
        where = ".".join(loc) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _json_type(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, int | float) else type(v).__name__
    )


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."
