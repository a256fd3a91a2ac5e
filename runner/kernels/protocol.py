"""The field's harness protocol: ``key: value`` lines written to ``POPCORN_FD``.

Everything here reads text the submission can write (it runs in the harness's process and can
find the pipe), so every size and every count is bounded: by the limits below, and a harness's
``test-count``/``benchmark-count`` by the number of cases the payload really has
(:func:`count_problem`), never by what the harness claims.
"""

from __future__ import annotations

import re

#: Limits on what a harness (or a submission writing to the same fd) can put into run.result.
MAX_KEYS = 20_000
MAX_KEY_CHARS = 200
MAX_VALUE_CHARS = 64 * 1024
#: All keys and values together: result.json must stay far below the host's 32 MiB read limit
#: however the other limits combine (20,000 keys x 64 KiB would be 1.3 GB).
MAX_TOTAL_CHARS = 4 * 1024 * 1024
#: The per-kind count keys whose value the runner checks against the payload.
COUNT_KINDS = ("test", "benchmark")

_INDEXED = re.compile(r"(test|benchmark)\.(\d{1,9})\.")


def parse_popcorn(data: bytes) -> tuple[dict[str, str], list[str]]:
    """``key: value`` lines → dict of strings (the last value of a key wins, as in the field).
    Returns the dict and warnings about what was cut."""
    result: dict[str, str] = {}
    warnings: list[str] = []
    cut_values = 0
    total = 0
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
        grow = len(key) + len(value) - (len(key) + len(result[key]) if key in result else 0)
        if total + grow > MAX_TOTAL_CHARS:
            warnings.append(
                f"harness output is over {MAX_TOTAL_CHARS} characters; the rest was dropped"
            )
            break
        total += grow
        result[key] = value
    if cut_values:
        warnings.append(f"{cut_values} harness lines were over the size limits and were cut")
    return result, warnings


def claimed_count(result: dict[str, str], kind: str) -> int | None:
    """The harness's ``{kind}-count`` as an int, or None when it is absent or not an integer.
    Only decimal digits are accepted (``int()`` alone would take ``1_000`` or 4,300-digit
    strings and spend time on them)."""
    raw = result.get(f"{kind}-count")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
        return None
    return int(raw)


def count_problem(result: dict[str, str], cases: int) -> str | None:
    """Why the counts a harness reported cannot be true for a run that had ``cases`` cases, or
    None. A count that is not a non-negative integer, or above ``cases``, is a claim the runner
    cannot check: the run fails with this reason."""
    for kind in COUNT_KINDS:
        raw = result.get(f"{kind}-count")
        if raw is None:
            continue
        n = claimed_count(result, kind)
        if n is None:
            return f"the harness reported {kind}-count {_quote(raw)}, not a non-negative integer"
        if n > cases:
            return (
                f"the harness reported {kind}-count {n}, but the run had only {cases} "
                f"case{'s' if cases != 1 else ''}"
            )
    return None


def bounded_count(result: dict[str, str], kind: str, cases: int | None = None) -> int:
    """How many ``{kind}.{i}`` entries to look at: the claimed count, never more than ``cases``
    (when known) nor than the keys that could exist (:data:`MAX_KEYS`); 0 when unparseable."""
    n = claimed_count(result, kind) or 0
    return min(n, MAX_KEYS if cases is None else cases)


def indices(result: dict[str, str], kind: str) -> list[int]:
    """The indices ``i`` that appear in ``{kind}.{i}.*`` keys, sorted: bounded by the number of
    keys, whatever a count key claims."""
    found = set()
    for key in result:
        m = _INDEXED.match(key)
        if m and m.group(1) == kind:
            found.add(int(m.group(2)))
    return sorted(found)


def mean_ns(result: dict[str, str], index: int) -> float | None:
    raw = result.get(f"benchmark.{index}.mean")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _quote(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")
