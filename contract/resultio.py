"""Reading and writing result.json: atomic writes, bounded and validated reads, and the
verdict's signature.

The signature is the unforgeable part of the verdict channel: whoever starts the runner (the
vendor host, the local backend) makes a per-job key and hands it to the runner alone
(:data:`KEY_ENV` in the environment of a process the submission cannot read, or the first line of
its stdin). The runner writes ``result.json`` and ``result.json.sig`` = HMAC-SHA256(key, bytes).
A result whose signature does not match was not written by this job's runner, whatever it says.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from pydantic import ValidationError

from contract.result import FullResult, RunnerExit

RESULT_NAME = "result.json"
#: The signature file beside result.json (hex HMAC-SHA256 of its bytes).
SIG_SUFFIX = ".sig"
#: The variable that carries the key to the runner (removed from the runner's env at start).
KEY_ENV = "KITEBENCH_RESULT_KEY"
#: A result.json larger than this is refused when read back (outputs are capped well below it).
MAX_RESULT_BYTES = 32 * 1024 * 1024


class ResultFileError(ValueError):
    """result.json is missing, too large or does not match the contract."""


def new_key() -> str:
    """A fresh per-job key (hex)."""
    return secrets.token_hex(32)


def signature(key: str, data: bytes) -> str:
    return hmac.new(bytes.fromhex(key), data, hashlib.sha256).hexdigest()


def write_result(
    result: FullResult,
    directory: str | os.PathLike[str],
    name: str = RESULT_NAME,
    *,
    key: str | None = None,
    durable: bool = True,
) -> Path:
    """Write ``result`` as ``directory/name`` atomically (temp file in the same dir + rename), so a
    reader never sees half a file, even if the process is killed while writing; with ``key``,
    its signature beside it (written after it: a kill in between leaves a mismatch, a failure).

    ``durable=False`` skips the fsyncs, for a checkpoint the final write replaces: the rename
    alone already holds against a killed process (the page cache outlives it); only a crash of
    the whole machine could lose it, and that loses the job with it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = (result.to_json() + "\n").encode("utf-8")
    target = directory / name
    _write_atomic(directory, name, data, durable)
    if key is not None:
        _write_atomic(directory, name + SIG_SUFFIX, signature(key, data).encode("ascii"), durable)
    return target


def _write_atomic(directory: Path, name: str, data: bytes, durable: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int = MAX_RESULT_BYTES) -> bytes:
    """The bytes of a file someone else may have tampered with: never through a link, only a
    regular file, at most ``max_bytes`` (raises :class:`ResultFileError` with the reason)."""
    path = Path(path)
    try:
        # O_NOFOLLOW: a link to a host path must not be followed (it would reveal the host's
        # files); O_NONBLOCK + a regular-file check: a FIFO or device must not hang the reader.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ResultFileError(f"{path.name} is not a regular file")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ResultFileError(f"{path.name} was not written") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ResultFileError(f"{path.name} is a symbolic link") from None
        raise ResultFileError(f"{path.name} cannot be read: {e.strerror}") from None
    if len(data) > max_bytes:
        raise ResultFileError(f"{path.name} is larger than {max_bytes} bytes")
    return data


def read_result(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_RESULT_BYTES, key: str | None = None
) -> FullResult:
    """Parse a result.json with the contract; with ``key``, only if its signature matches.
    Raises :class:`ResultFileError` with the reason."""
    path = Path(path)
    data = read_bytes(path, max_bytes=max_bytes)
    if key is not None:
        try:
            sig = read_bytes(path.with_name(path.name + SIG_SUFFIX), max_bytes=256)
        except ResultFileError as e:
            raise ResultFileError(f"{path.name} is not signed by the runner ({e})") from None
        if not hmac.compare_digest(sig.strip(), signature(key, data).encode("ascii")):
            raise ResultFileError(
                f"{path.name} was not written by this job's runner (its signature does not match)"
            )
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
