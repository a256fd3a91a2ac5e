"""The fork archive: get its bytes (inline / URL / local path) and extract it safely.

The archive is hostile input. Extraction never trusts a member: every path is checked before
anything is written, links must resolve inside the target, only regular files, directories and
such links are accepted, and the number of files and the bytes written are capped (bomb guard,
counted while writing, not taken from headers). Files are written by this module, not by
``tarfile.extractall``, so no mode bits, owners or device nodes come from the archive.

Layout rule: the archive holds ``<dir>/vllm/...`` (e.g. ``vllm-fork/vllm/__init__.py``); a bare
top-level ``vllm/`` is refused, so a fork is always a directory that can hold packaging files
(setup.py, csrc/) next to its package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from contract.codec import format_size

_CHUNK = 1 << 16


class ArchiveError(ValueError):
    """The archive cannot be used; the message says why (shown to the submitter)."""


@dataclass(frozen=True)
class Limits:
    max_archive_bytes: int = 256 * 2**20
    max_files: int = 20_000
    max_bytes: int = 1024 * 2**20


# ---------------------------------------------------------------------------------------------
# getting the bytes
# ---------------------------------------------------------------------------------------------


def write_inline(b64: str, dest: Path, limits: Limits) -> Path:
    """Decode an inline (base64) archive into ``dest``."""
    if len(b64) > limits.max_archive_bytes * 4 // 3 + 8:
        raise ArchiveError(
            f"inline archive is over the limit of {format_size(limits.max_archive_bytes)}"
        )
    try:
        data = base64.b64decode("".join(b64.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ArchiveError(f"submission_archive is not valid base64 ({e})") from None
    dest.write_bytes(data)
    return dest


def download(url: str, dest: Path, sha256: str, limits: Limits, *, timeout: float = 60) -> Path:
    """Stream ``url`` into ``dest``, refusing more than ``max_archive_bytes``; verify ``sha256``."""
    h = hashlib.sha256()
    size = 0
    req = urllib.request.Request(url, headers={"User-Agent": "kitebench-runner"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(dest, "wb") as f:  # noqa: S310 - http(s) checked by the contract
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_archive_bytes:
                raise ArchiveError(
                    f"archive_url serves {format_size(int(declared))}, over the limit of "
                    f"{format_size(limits.max_archive_bytes)}"
                )
            while chunk := resp.read(_CHUNK):
                size += len(chunk)
                if size > limits.max_archive_bytes:
                    raise ArchiveError(
                        f"archive_url sent more than the limit of {format_size(limits.max_archive_bytes)}"
                    )
                h.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as e:
        raise ArchiveError(f"archive_url download failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ArchiveError(f"archive_url download failed: {reason}") from None
    verify_sha256(dest, sha256, h.hexdigest())
    return dest


def verify_sha256(path: Path, expected: str | None, actual: str | None = None) -> str:
    if actual is None:
        actual = sha256_file(path)
    if expected is not None and actual.lower() != expected.lower():
        raise ArchiveError(
            f"archive sha256 mismatch: expected {expected.lower()}, got {actual} "
            "(the archive changed after the payload was made)"
        )
    return actual


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def archive_kind(path: Path) -> str:
    """``tar.gz`` / ``tar`` / ``zip`` by content (an inline archive has no name)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError("the archive is not a .tar.gz/.tgz, .tar or .zip file")


# ---------------------------------------------------------------------------------------------
# safe extraction
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink"
    size: int
    mode: int
    link: str = ""


def _check_name(name: str) -> PurePosixPath:
    if not name or "\x00" in name or "\\" in name:
        raise ArchiveError(f"unsafe path in the archive: {name!r} (empty, NUL or backslash)")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"unsafe path in the archive: {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"unsafe path in the archive: {name!r} contains '..'")
    if not parts:
        raise ArchiveError(f"unsafe path in the archive: {name!r}")
    return PurePosixPath(*parts)


def _tar_members(tf: tarfile.TarFile) -> Iterator[tuple[_Member, tarfile.TarInfo]]:
    for ti in tf:
        if ti.isreg():
            if ti.issparse():
                raise ArchiveError(f"sparse file in the archive is not allowed: {ti.name!r}")
            kind = "file"
        elif ti.isdir():
            kind = "dir"
        elif ti.issym():
            kind = "symlink"
        elif ti.islnk():
            kind = "hardlink"
        else:
            what = (
                "device file"
                if (ti.ischr() or ti.isblk())
                else "fifo"
                if ti.isfifo()
                else "special file"
            )
            raise ArchiveError(f"{what} in the archive is not allowed: {ti.name!r}")
        yield _Member(ti.name, kind, ti.size, ti.mode, ti.linkname), ti


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[_Member, zipfile.ZipInfo]]:
    for zi in zf.infolist():
        mode = zi.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if zi.is_dir() or fmt == stat.S_IFDIR:
            kind = "dir"
        elif fmt == stat.S_IFLNK:
            kind = "symlink"
        elif fmt in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise ArchiveError(
                f"special file (mode {oct(mode)}) in the archive is not allowed: {zi.filename!r}"
            )
        link = ""
        if kind == "symlink":
            if zi.file_size > 4096:
                raise ArchiveError(f"symlink target too long in the archive: {zi.filename!r}")
            link = zf.read(zi).decode("utf-8", "replace")
        yield _Member(zi.filename, kind, zi.file_size, mode & 0o777, link), zi


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _copy_capped(src: IO[bytes], dst: Path, budget: list[int], name: str, limits: Limits) -> None:
    # O_EXCL|O_NOFOLLOW: never write through a link or over a file an earlier member created.
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > limits.max_bytes:
                raise ArchiveError(
                    f"archive expands to more than {format_size(limits.max_bytes)} (at {name!r}): "
                    "refused as an archive bomb"
                )
            out.write(chunk)


def extract(archive: Path, dest: Path, limits: Limits) -> Path:
    """Extract ``archive`` into the empty dir ``dest``; return the fork root (``dest/<dir>``)."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    kind = archive_kind(archive)
    count = 0
    budget = [0]
    written: set[PurePosixPath] = set()

    def target_of(rel: PurePosixPath) -> Path:
        path = root.joinpath(*rel.parts)
        # A parent that is a symlink (an earlier member) could lead outside: resolve and check.
        if not _inside(root, path.parent.resolve()):
            raise ArchiveError(f"unsafe path in the archive: {rel} goes through a link outside")
        return path

    try:
        if kind == "zip":
            opened: tarfile.TarFile | zipfile.ZipFile = zipfile.ZipFile(archive)
            members: Iterator = _zip_members(opened)
        else:
            opened = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by `with opened`
            members = _tar_members(opened)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise ArchiveError(f"the archive cannot be read: {e}") from None

    with opened:
        try:
            for m, raw in members:
                count += 1
                if count > limits.max_files:
                    raise ArchiveError(
                        f"archive has more than {limits.max_files} entries: refused as an archive bomb"
                    )
                rel = _check_name(m.name)
                path = target_of(rel)
                if m.kind == "dir":
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                if m.size > limits.max_bytes:
                    raise ArchiveError(
                        f"archive member {m.name!r} declares {format_size(m.size)}, more than "
                        f"{format_size(limits.max_bytes)}: refused as an archive bomb"
                    )
                path.parent.mkdir(parents=True, exist_ok=True)
                if rel in written or os.path.lexists(path):
                    raise ArchiveError(f"archive has {m.name!r} twice")
                if m.kind == "symlink":
                    if not m.link or m.link.startswith("/"):
                        raise ArchiveError(
                            f"symlink {m.name!r} -> {m.link!r} points outside the archive (absolute)"
                        )
                    resolved = Path(os.path.normpath(path.parent.resolve() / m.link))
                    if not _inside(root, resolved):
                        raise ArchiveError(
                            f"symlink {m.name!r} -> {m.link!r} points outside the archive"
                        )
                    os.symlink(m.link, path)
                    if not _inside(root, path.resolve()):  # a chain through other links
                        raise ArchiveError(
                            f"symlink {m.name!r} -> {m.link!r} points outside the archive"
                        )
                elif m.kind == "hardlink":
                    src_rel = _check_name(m.link)
                    src = root.joinpath(*src_rel.parts)
                    if src_rel not in written or not src.is_file() or src.is_symlink():
                        raise ArchiveError(
                            f"hardlink {m.name!r} -> {m.link!r} does not point to a file earlier in the archive"
                        )
                    with open(src, "rb") as f:  # a copy: no shared inode with anything
                        _copy_capped(f, path, budget, m.name, limits)
                else:
                    src_f = (
                        opened.extractfile(raw)
                        if isinstance(opened, tarfile.TarFile)
                        else opened.open(raw)
                    )
                    if src_f is None:
                        raise ArchiveError(f"archive member {m.name!r} cannot be read")
                    with src_f:
                        _copy_capped(src_f, path, budget, m.name, limits)
                    if m.mode & 0o111:
                        os.chmod(path, 0o755)
                written.add(rel)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise ArchiveError(f"the archive is corrupt: {e}") from None
    return fork_root(root)


def fork_root(root: Path) -> Path:
    """The one top-level directory that holds ``vllm/``."""
    if (root / "vllm").exists():
        raise ArchiveError(
            "the archive has a bare top-level vllm/: pack the fork as <dir>/vllm/... "
            "(e.g. tar czf fork.tar.gz vllm-fork, with vllm-fork/vllm/__init__.py inside)"
        )
    candidates = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.is_symlink()
        and (d / "vllm").is_dir()
        and not (d / "vllm").is_symlink()
    ]
    if not candidates:
        raise ArchiveError(
            "the archive has no <dir>/vllm/ directory (expected e.g. vllm-fork/vllm/...)"
        )
    if len(candidates) > 1:
        names = ", ".join(d.name for d in candidates)
        raise ArchiveError(
            f"the archive has several <dir>/vllm/ directories ({names}); expected one"
        )
    return candidates[0]
