"""A fresh private work dir per run, holding the payload's files and the cases file."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from contract.payload import TestCase
from runner import procs

CASES_NAME = "cases.txt"


def format_case(case: TestCase) -> str:
    """One case as the field's ``k: v; k: v`` line."""
    if isinstance(case, str):
        return case.strip()
    parts = []
    for key, value in case.items():
        if isinstance(value, bool):  # YAML true/false: the field's harnesses read them as text
            value = str(value).lower()
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def cases_text(cases: Sequence[TestCase]) -> str:
    return "".join(format_case(c) + "\n" for c in cases)


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write ``name → text`` under ``root`` (names were validated as plain relative paths)."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")


@contextlib.contextmanager
def private_dir(prefix: str = "kitebench-run-", base: str | None = None) -> Iterator[Path]:
    """A new 0700 directory, removed afterwards even if the submission made files read-only."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove a run dir whatever the submission did to it; nothing outside it is changed (the
    old version chmod'ed the dir's parent: for a run dir straight under /tmp, /tmp itself)."""
    procs.remove_tree(path)
