"""Reading and writing result.json: atomic writes, bounded and validated reads."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from pydantic import ValidationError

from runner.contract import FullResult, RunnerExit

RESULT_NAME = "result.json"
#: A result.json larger than this is refused when read back (outputs are capped well below it).
MAX_RESULT_BYTES = 32 * 1024 * 1024


class ResultFileError(ValueError):
    """result.json is missing, too large or does not match the contract."""


def write_result(result: FullResult, directory: str | os.PathLike[str], name: str = RESULT_NAME) -> Path:
    """Write ``result`` as ``directory/name`` atomically (temp file in the same dir + rename), so a
    reader never sees half a file, even if the process is killed while writing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(result.to_json())
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def read_result(path: str | os.PathLike[str], *, max_bytes: int = MAX_RESULT_BYTES) -> FullResult:
    """Parse a result.json with the contract; raise :class:`ResultFileError` with the reason."""
    path = Path(path)
    try:
        # O_NONBLOCK + a regular-file check: whoever could write the dir (a submission) may have
        # left a FIFO or a device there, and opening or reading it must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ResultFileError(f"{path.name} is not a regular file")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ResultFileError(f"{path.name} was not written") from None
    except OSError as e:
        raise ResultFileError(f"{path.name} cannot be read: {e.strerror}") from None
    return parse_result(data, max_bytes=max_bytes, name=path.name)


def parse_result(data: bytes | str, *, max_bytes: int = MAX_RESULT_BYTES, name: str = RESULT_NAME) -> FullResult:
    if len(data) > max_bytes:
        raise ResultFileError(f"{name} is larger than {max_bytes} bytes")
    try:
        return FullResult.model_validate_json(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ResultFileError(f"{name} does not match the contract: {where}: {first['msg']}") from None


def exit_code_for(result: FullResult) -> RunnerExit:
    """The process exit code class that goes with a result."""
    if result.kitebench.exit_code is not None:
        try:
            return RunnerExit(result.kitebench.exit_code)
        except ValueError:
            return RunnerExit.INTERNAL
    if not result.success:
        return RunnerExit.INTERNAL
    return RunnerExit.PASSED if result.kitebench.passed else RunnerExit.FAILED


def not_written_by_runner(result: FullResult, exit_code: int) -> str | None:
    """Why a successful result.json cannot be the runner's, else None. The submission runs as the
    runner's user and can write the output dir, but it cannot set the runner's exit code: a
    result.json left by it (the runner died, or its own write failed) disagrees with that code."""
    expected = int(exit_code_for(result))
    if result.success and exit_code != expected:
        return f"{RESULT_NAME} was not written by the runner (it implies exit code {expected})"
    return None
