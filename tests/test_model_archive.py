"""Fork archives: getting the bytes (inline, real HTTP download, local path) and safe extraction.

Hostile archives are built with tarfile/zipfile the way an attacker would, and each must be
refused with its reason, before anything lands outside the target directory.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import os
import re
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract import codec
from runner.model import archive as arch
from tests.kernels_support import run_runner

LIMITS = arch.Limits(max_archive_bytes=1 << 20, max_files=50, max_bytes=1 << 20)


def _tar(path: Path, members: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> Path:
    """members: (kind, name, data-or-linkname) with kind file|dir|symlink|hardlink|chr|fifo."""
    with tarfile.open(path, mode) as tf:
        for kind, name, data in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                raw = data if isinstance(data, bytes) else data.encode()
                ti.size = len(raw)
                tf.addfile(ti, io.BytesIO(raw))
                continue
            ti.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = str(data)
            tf.addfile(ti)
    return path


GOOD = [
    ("dir", "vllm-fork", b""),
    ("dir", "vllm-fork/vllm", b""),
    ("file", "vllm-fork/vllm/__init__.py", "X = 1\n"),
    ("file", "vllm-fork/vllm/sub/mod.py", "Y = 2\n"),
    ("symlink", "vllm-fork/vllm/alias.py", "sub/mod.py"),
    ("hardlink", "vllm-fork/vllm/copy.py", "vllm-fork/vllm/__init__.py"),
]


def test_good_tar_gz_extracts_to_the_fork_root(tmp_path: Path) -> None:
    root = arch.extract(_tar(tmp_path / "a.tgz", GOOD), tmp_path / "x", LIMITS)
    assert root == (tmp_path / "x" / "vllm-fork").resolve()
    assert (root / "vllm" / "sub" / "mod.py").read_text() == "Y = 2\n"
    assert (root / "vllm" / "alias.py").read_text() == "Y = 2\n"
    copy = root / "vllm" / "copy.py"
    assert copy.read_text() == "X = 1\n" and not copy.is_symlink()
    assert os.stat(copy).st_ino != os.stat(root / "vllm" / "__init__.py").st_ino


def test_good_zip_extracts(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("fork/vllm/__init__.py", "X = 1\n")
    root = arch.extract(z, tmp_path / "x", LIMITS)
    assert (root / "vllm" / "__init__.py").read_text() == "X = 1\n"


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("file", "../evil.py", "x")], "contains '..'"),
        ([("file", "vllm-fork/vllm/../../../evil.py", "x")], "contains '..'"),
        ([("file", "/tmp/evil.py", "x")], "is absolute"),
        ([("symlink", "vllm-fork/vllm/x.py", "../../../etc/passwd")], "points outside"),
        ([("symlink", "vllm-fork/vllm/x.py", "/etc/passwd")], "points outside"),
        (
            [("symlink", "vllm-fork/up", "../.."), ("file", "vllm-fork/up/evil.py", "x")],
            "points outside",
        ),
        ([("hardlink", "vllm-fork/vllm/x.py", "../../etc/passwd")], "contains '..'"),
        ([("hardlink", "vllm-fork/vllm/x.py", "etc/passwd")], "does not point to a file earlier"),
        ([("chr", "vllm-fork/vllm/null", "")], "device file"),
        ([("fifo", "vllm-fork/vllm/pipe", "")], "fifo"),
        ([("file", "vllm/__init__.py", "x")], "bare top-level vllm/"),
        ([("file", "vllm-fork/README", "x")], "no <dir>/vllm/"),
        ([("file", "a/vllm/__init__.py", "x"), ("file", "b/vllm/__init__.py", "x")], "several"),
        ([("file", "vllm-fork/vllm/a.py", "1"), ("file", "vllm-fork/vllm/a.py", "2")], "twice"),
    ],
    ids=[
        "dotdot",
        "inner-dotdot",
        "absolute",
        "symlink-escape",
        "symlink-absolute",
        "dir-symlink-escape",
        "hardlink-dotdot",
        "hardlink-unknown",
        "device",
        "fifo",
        "bare-vllm",
        "no-vllm",
        "two-forks",
        "duplicate",
    ],
)
def test_hostile_tar_is_rejected_with_the_reason(
    tmp_path: Path, members: list, reason: str
) -> None:
    dest = tmp_path / "x"
    with pytest.raises(arch.ArchiveError, match=re.escape(reason)):
        arch.extract(_tar(tmp_path / "a.tgz", members), dest, LIMITS)
    assert not (tmp_path / "evil.py").exists()
    assert not (tmp_path / "x" / "vllm-fork" / "up" / "evil.py").exists()


def test_too_many_files_is_a_bomb(tmp_path: Path) -> None:
    members = [("file", f"f/vllm/m{i}.py", "x") for i in range(LIMITS.max_files + 1)]
    with pytest.raises(
        arch.ArchiveError, match=r"more than 50 entries: refused as an archive bomb"
    ):
        arch.extract(_tar(tmp_path / "a.tgz", members), tmp_path / "x", LIMITS)


def test_too_many_bytes_is_a_bomb(tmp_path: Path) -> None:
    # 600 KiB of zeros, twice: each fits, together they exceed the 1 MiB cap; the .tgz is tiny.
    zeros = b"\0" * (600 << 10)
    path = _tar(
        tmp_path / "a.tgz", [("file", "f/vllm/a.bin", zeros), ("file", "f/vllm/b.bin", zeros)]
    )
    assert path.stat().st_size < 20_000
    with pytest.raises(arch.ArchiveError, match="expands to more than 1.0 MiB"):
        arch.extract(path, tmp_path / "x", LIMITS)


def test_zip_symlink_escape_and_traversal(tmp_path: Path) -> None:
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("fork/vllm/x.py")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../../../etc/passwd")
    with pytest.raises(arch.ArchiveError, match="points outside"):
        arch.extract(z, tmp_path / "x", LIMITS)
    z2 = tmp_path / "dots.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        zf.writestr("fork/../../evil.py", "x")
    with pytest.raises(arch.ArchiveError, match="contains '..'"):
        arch.extract(z2, tmp_path / "y", LIMITS)


def test_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "a.tgz"
    p.write_bytes(b"hello, this is not an archive at all")
    with pytest.raises(arch.ArchiveError, match="not a .tar.gz"):
        arch.extract(p, tmp_path / "x", LIMITS)
    p.write_bytes(gzip.compress(b"\x01" * 2000))
    with pytest.raises(arch.ArchiveError, match="cannot be read|corrupt"):
        arch.extract(p, tmp_path / "y", LIMITS)


def test_inline_base64(tmp_path: Path) -> None:
    with pytest.raises(arch.ArchiveError, match="not valid base64"):
        arch.write_inline("not base64 !!!", tmp_path / "a", LIMITS)
    data = b"\x1f\x8b" + b"abc"
    arch.write_inline(base64.b64encode(data).decode(), tmp_path / "a", LIMITS)
    assert (tmp_path / "a").read_bytes() == data


# ---- download over real HTTP on 127.0.0.1 ----------------------------------------------------


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield served, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_verifies_hash_and_size(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, url = http_dir
    good = _tar(served / "fork.tgz", GOOD)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    out = arch.download(f"{url}/fork.tgz", tmp_path / "dl", digest, LIMITS)
    assert out.read_bytes() == good.read_bytes()
    with pytest.raises(arch.ArchiveError, match="sha256 mismatch"):
        arch.download(f"{url}/fork.tgz", tmp_path / "dl2", "0" * 64, LIMITS)
    (served / "big.bin").write_bytes(os.urandom(LIMITS.max_archive_bytes + 10))
    with pytest.raises(arch.ArchiveError, match="over the limit"):
        arch.download(f"{url}/big.bin", tmp_path / "dl3", "0" * 64, LIMITS)
    with pytest.raises(arch.ArchiveError, match="HTTP 404"):
        arch.download(f"{url}/missing.tgz", tmp_path / "dl4", "0" * 64, LIMITS)


def _run_runner(payload: dict, env: dict[str, str]) -> tuple[int, dict]:
    run = run_runner(codec.encode(payload), env, timeout=120)
    return run.exit_code, run.raw


def _model_payload(**archive: str) -> dict:
    return {"lang": "model", "mode": "test", "model_config": {"model_name": "m"}, **archive}


def test_runner_reports_a_hostile_archive_as_stage_install(
    tmp_path: Path, runner_env: dict
) -> None:
    bad = _tar(tmp_path / "bad.tgz", [("file", "vllm/__init__.py", "x")])
    rc, result = _run_runner(
        _model_payload(submission_archive=base64.b64encode(bad.read_bytes()).decode()), runner_env
    )
    assert rc == 1
    assert result["success"] is False
    assert result["kitebench"]["stage"] == "install"
    assert "bare top-level vllm/" in result["error"]
    phase = result["kitebench"]["phases"][0]
    assert phase["name"] == "install" and phase["success"] is False


def test_runner_download_and_hash_mismatch(
    tmp_path: Path, runner_env: dict, http_dir: tuple[Path, str]
) -> None:
    served, url = http_dir
    escape = _tar(served / "escape.tgz", [("symlink", "f/vllm/x.py", "/etc/passwd")])
    digest = hashlib.sha256(escape.read_bytes()).hexdigest()
    rc, result = _run_runner(
        _model_payload(archive_url=f"{url}/escape.tgz", archive_sha256=digest), runner_env
    )
    assert (rc, result["kitebench"]["stage"]) == (1, "install")
    assert "points outside" in result["error"]
    rc, result = _run_runner(
        _model_payload(archive_url=f"{url}/escape.tgz", archive_sha256="a" * 64), runner_env
    )
    assert "sha256 mismatch" in result["error"] and result["kitebench"]["stage"] == "install"
    rc, result = _run_runner(_model_payload(archive_path=str(tmp_path / "nope.tgz")), runner_env)
    assert "is not a file" in result["error"] and rc == 1


def test_runner_without_vllm_is_an_infrastructure_failure(tmp_path: Path, runner_env: dict) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this interpreter has vLLM installed")
    good = _tar(tmp_path / "good.tgz", GOOD)
    env = dict(runner_env, KITEBENCH_VLLM_PYTHON=sys.executable)
    rc, result = _run_runner(_model_payload(archive_path=str(good)), env)
    assert rc == 3 and result["kitebench"]["stage"] == "setup"
    assert "no vLLM installed" in result["error"] and "KITEBENCH_VLLM_PYTHON" in result["error"]
