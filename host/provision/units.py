"""Reading what systemd says: unit files (``Key=value``, ``Environment=``) and
``systemctl show`` output, timespans included."""

from __future__ import annotations

import re


def parse_unit(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (all sections), values in order, continuations joined."""
    out: dict[str, list[str]] = {}
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def unit_environment(values: list[str]) -> dict[str, str]:
    env = {}
    for v in values:
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        key, sep, val = v.partition("=")
        if sep:
            env[key] = val
    return env


def parse_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


_SPAN_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}


def parse_timespan_us(text: str) -> int | None:
    """systemd's ``1min 4s`` / ``400ms`` / ``infinity`` → microseconds (None = infinity/unset)."""
    text = text.strip()
    if text in ("", "infinity"):
        return None
    total = 0
    for num, unit in re.findall(r"([0-9.]+)\s*(us|ms|min|s|h)", text):
        total += round(float(num) * _SPAN_UNITS[unit])
    return total
