"""The field's harness protocol: ``key: value`` lines written to ``POPCORN_FD``."""

from __future__ import annotations

#: Limits on what a harness (or a submission writing to the same fd) can put into run.result.
MAX_KEYS = 20_000
MAX_KEY_CHARS = 200
MAX_VALUE_CHARS = 64 * 1024


def parse_popcorn(data: bytes) -> tuple[dict[str, str], list[str]]:
    """``key: value`` lines → dict of strings (the last value of a key wins, as in the field).
    Returns the dict and warnings about what was cut."""
    result: dict[str, str] = {}
    warnings: list[str] = []
    cut_values = 0
    for raw in data.decode("utf-8", errors="replace").splitlines():
        key, sep, value = raw.partition(":")
        key = key.strip()
        if not sep or not key:
            continue
        if len(key) > MAX_KEY_CHARS:
            cut_values += 1
            continue
        value = value.strip()
        if len(value) > MAX_VALUE_CHARS:
            value = value[:MAX_VALUE_CHARS] + "..."
            cut_values += 1
        if key not in result and len(result) >= MAX_KEYS:
            warnings.append(f"harness output has more than {MAX_KEYS} keys; the rest were dropped")
            break
        result[key] = value
    if cut_values:
        warnings.append(f"{cut_values} harness lines were over the size limits and were cut")
    return result, warnings


def mean_ns(result: dict[str, str], index: int) -> float | None:
    raw = result.get(f"benchmark.{index}.mean")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
