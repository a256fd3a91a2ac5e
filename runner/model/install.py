"""Install a fork for ONE server process, never touching the installed vLLM.

Two paths:

* **Python-only fork** (no native sources): a *shadow* of the installed ``vllm`` package is built
  in the job's private work dir: links to the installed subtrees and files, real dirs only on the
  way to the fork's files, which are copied in (see :func:`build_shadow`). The shadow's parent
  goes first on the server's ``PYTHONPATH``, so only that process sees the fork. Nothing is
  written into the installed package (links are replaced, not written through, and the server
  writes no bytecode: stock's is linked, the fork's few files are compiled at each start).
* **Fork with native sources** (C/C++/CUDA, or a ``csrc/``): ``pip install -e`` into a private
  venv that sees the installed packages (torch, ...) through a ``.pth`` file placed after its own
  site-packages; the fork's tree goes first on the server's ``PYTHONPATH``. Bounded by
  ``install_timeout``; the pip log is kept.

The native path ends with an import check in the server's environment: ``import vllm`` must work
and must resolve to the fork's copy. The overlay only checks where ``vllm`` resolves: the
server's start is the import (the job runs :func:`import_check` when the server fails).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from runner.model.audit_job import stock_version
from runner.model.util import StageError, tail
from runner.sandbox import Sandbox

#: Files whose presence means the fork needs a build (not the fast path).
NATIVE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hpp", ".pyx", ".so")


@dataclass
class Installed:
    """How to start a server that runs the fork."""

    method: str  #: "overlay" (Python-only fast path) or "editable" (pip install -e)
    python: str  #: interpreter of the server process
    env: dict[str, str]  #: environment additions for the server process (PYTHONPATH)
    package_dir: Path  #: where ``import vllm`` resolves in that environment
    installed_dir: Path  #: the installed vLLM package (left unchanged)
    fork_files: list[str] = field(default_factory=list)  #: files taken from the fork
    version: str = ""
    log: Path | None = None


def _run(
    cmd: list[str],
    *,
    env: dict[str, str] | None,
    cwd: Path,
    timeout: float,
    log: Path | None = None,
    sb: Sandbox | None = None,
    writable: tuple[Path, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``cmd`` to the end; with ``sb`` (it runs the fork's code) inside the job's sandbox."""
    run_cmd = sb.command(cmd, cwd=cwd, writable=writable) if sb is not None else cmd
    try:
        proc = subprocess.run(
            run_cmd,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=max(1.0, timeout),
            check=False,
            start_new_session=True,
            **(sb.popen_kwargs() if sb is not None else {}),
        )
    except subprocess.TimeoutExpired as e:
        out = (
            (e.stdout or "")
            if isinstance(e.stdout, str)
            else (e.stdout or b"").decode("utf-8", "replace")
        )
        if log is not None:
            log.write_text(out)
        raise StageError(
            "install",
            f"install step timed out after {timeout:.0f} s: {' '.join(cmd[:4])}...\n{tail(out)}",
        ) from None
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    return proc


def base_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a child that runs vLLM: the job's env without the payload, secrets of
    the agent, or the runner's own PYTHONPATH."""
    drop = (
        "SUBMISSION_PAYLOAD",
        "KITEBENCH_PAYLOAD_FILE",
        "BUILDKITE_AGENT_ACCESS_TOKEN",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
    )
    from runner.kernels.environment import is_secret

    return {k: v for k, v in env.items() if k not in drop and not is_secret(k)}


def installed_vllm_dir(python: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> Path:
    """The installed ``vllm`` package dir of ``python`` (found without importing vLLM)."""
    code = (
        "import importlib.util as u; s = u.find_spec('vllm'); "
        "print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    )
    proc = _run([python, "-c", code], env=base_env(env), cwd=cwd, timeout=timeout)
    loc = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
    if not loc or not loc[0]:
        raise StageError(
            "setup",
            f"no vLLM installed for {python} (set KITEBENCH_VLLM_PYTHON to the interpreter of the "
            f"vLLM environment): {tail(proc.stderr, 5)}",
            internal=True,
        )
    return Path(loc[0])


def native_sources(fork: Path) -> list[str]:
    found = []
    for path in sorted(fork.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.suffix in NATIVE_SUFFIXES:
            found.append(str(path.relative_to(fork)))
    if (fork / "csrc").is_dir():
        found.append("csrc/")
    return found


def build_shadow(installed: Path, fork_pkg: Path, shadow_parent: Path) -> list[str]:
    """``shadow_parent/vllm``: the installed tree as links, the fork's files copied over.

    Only the dirs on the way to a fork file are real dirs (their entries links to the installed
    ones); every other subtree is one link to the installed dir, so a fork of a few files costs
    a few dozen links, not one per installed file. A real dir's ``__pycache__`` is a real dir of
    links to the installed bytecode (valid for the links: a link's stat is its target's), minus
    that of the modules the fork replaces, so the server does not compile stock vLLM again."""
    shadow = shadow_parent / "vllm"
    fork_root = fork_pkg.resolve()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(fork_pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = Path(dirpath).relative_to(fork_pkg)
        for name in sorted(filenames):
            src = Path(dirpath) / name
            if not name.endswith((".pyc", ".pyo")) and src.resolve().is_relative_to(fork_root):
                files.append(rel / name)
    dirs = {Path(".")} | {p for f in files for p in f.parents}
    for rel in sorted(dirs, key=lambda p: len(p.parts)):  # parents first
        dst = shadow / rel
        if dst.is_symlink():
            dst.unlink()  # a linked installed dir (or file) the fork writes into: expand it
        if not dst.exists():
            _expand(installed / rel, dst)
    taken: list[str] = []
    for rel in files:
        dst = shadow / rel
        if dst.is_dir():
            raise StageError(
                "install",
                f"the fork's file vllm/{rel} would replace a directory of the installed vLLM",
            )
        if dst.is_symlink():
            dst.unlink()  # replace the link to the installed file; never write through it
        shutil.copyfile(fork_pkg / rel, dst, follow_symlinks=True)
        for pyc in (dst.parent / "__pycache__").glob(f"{glob.escape(dst.stem)}.*.pyc"):
            pyc.unlink()  # stock bytecode never stands in for a fork's module
        taken.append(str(Path("vllm") / rel))
    return taken


def _expand(src: Path, dst: Path) -> None:
    """``dst``: a real dir holding a link per entry of the installed dir ``src`` (if any)."""
    dst.mkdir(parents=True)
    if not src.is_dir() or src.is_symlink():
        return
    for entry in os.scandir(src):
        if entry.name == "__pycache__" and entry.is_dir(follow_symlinks=False):
            cache = dst / "__pycache__"
            cache.mkdir()
            for pyc in os.scandir(entry.path):
                if pyc.is_file(follow_symlinks=False):
                    os.symlink(pyc.path, cache / pyc.name)
        elif not entry.name.endswith((".pyc", ".pyo")):
            os.symlink(entry.path, dst / entry.name)


@dataclass
class _Found:
    """What a probe of ``vllm`` in the server's environment saw."""

    proc: subprocess.CompletedProcess[str]
    #: The path ``vllm`` comes from (None: not found).
    where: Path | None
    #: ``where`` lies under the fork's package dir. The shadow's unchanged files are links into
    #: the installed package: not resolved, so a link cannot pass for the fork.
    inside: bool
    #: The fields printed after the path.
    rest: list[str]


def _probe(
    python: str,
    code: str,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    log: Path | None,
    sb: Sandbox | None,
    writable: tuple[Path, ...],
    expect_under: Path,
) -> _Found:
    """Run ``code`` in the server's environment (in the sandbox, like its server); it prints
    ``KITEBENCH``, then tab-separated the path ``vllm`` comes from and any other fields (tabs:
    a path may hold spaces)."""
    proc = _run([python, "-c", code], env=env, cwd=cwd, timeout=timeout, log=log, sb=sb,
                writable=writable)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("KITEBENCH\t")), "")
    fields = line.split("\t")[1:]
    where = Path(os.path.abspath(fields[0])) if fields and fields[0] else None
    inside = where is not None and where.is_relative_to(os.path.abspath(expect_under))
    return _Found(proc, where, inside, fields[1:])


def import_check(
    python: str,
    env: dict[str, str],
    expect_under: Path,
    cwd: Path,
    timeout: float,
    log: Path | None,
    sb: Sandbox | None = None,
    writable: tuple[Path, ...] = (),
) -> str:
    """``import vllm`` in the server's environment; it must resolve under ``expect_under``.
    The fork's ``__init__`` runs here: in the sandbox, like its server. Returns its version."""
    code = ("import vllm; print('KITEBENCH', vllm.__file__, getattr(vllm, '__version__', ''),"
            " sep='\\t')")
    found = _probe(python, code, env, cwd, timeout, log, sb, writable, expect_under)
    proc = found.proc
    if proc.returncode != 0:
        raise StageError(
            "install",
            "the fork breaks `import vllm` (exit code "
            f"{proc.returncode}):\n{tail(proc.stderr or proc.stdout)}",
        )
    if not found.inside:
        raise StageError("install", f"`import vllm` did not load the fork (it loaded {found.where})")
    return found.rest[0] if found.rest else ""


def install(
    fork: Path,
    work: Path,
    python: str,
    env: dict[str, str],
    timeout: float,
    *,
    sb: Sandbox | None = None,
    run_dir: Path | None = None,
) -> Installed:
    """Install ``fork`` (the dir holding ``vllm/``) for a server; raise StageError("install").
    ``sb``: where the fork's own code (setup.py, ``import vllm``) runs; ``run_dir`` its cwd."""
    deadline = time.monotonic() + timeout
    run_dir = run_dir or work / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = work / "install.log"
    log.touch()
    installed = installed_vllm_dir(python, env, work)  # the runner's own cwd: run_dir is the fork's
    native = native_sources(fork)
    child_env = base_env(env)
    if not native:
        shadow_parent = work / "shadow"
        taken = build_shadow(installed, fork / "vllm", shadow_parent)
        # Nothing is compiled into the shadow's bytecode dirs (links to stock's): the fork's few
        # files are compiled at each start, which costs milliseconds.
        add = {"PYTHONPATH": str(shadow_parent), "PYTHONDONTWRITEBYTECODE": "1"}
        child_env.update(add)
        result = Installed(
            "overlay", python, add, shadow_parent / "vllm", installed, taken, log=log
        )
        # No `import vllm` here: the server's start is that import, and a second one costs as
        # much as the rest of the install (the job runs import_check only when the server does
        # not come up, to name the stage). Checked here: `vllm` resolves to the shadow.
        resolve_check(python, child_env, result.package_dir, run_dir,
                      max(1.0, deadline - time.monotonic()), log, sb, fork_dirs(work))
        result.version = stock_version(result.package_dir)  # the fork's _version.py, as text
        return result
    result = _editable(fork, work, python, child_env, deadline, log, installed, native, sb)
    child_env.update(result.env)
    result.version = import_check(
        result.python,
        child_env,
        result.package_dir,
        run_dir,
        max(1.0, deadline - time.monotonic()),
        log,
        sb,
        fork_dirs(work),
    )
    return result


def resolve_check(
    python: str,
    env: dict[str, str],
    expect_under: Path,
    cwd: Path,
    timeout: float,
    log: Path | None,
    sb: Sandbox | None = None,
    writable: tuple[Path, ...] = (),
) -> None:
    """``vllm`` found (not imported: no code of the fork runs) under ``expect_under`` in the
    server's environment, in the sandbox like its server."""
    code = ("import importlib.util as u; s = u.find_spec('vllm'); "
            "print('KITEBENCH', s.origin if s else '', sep='\\t')")
    found = _probe(python, code, env, cwd, timeout, log, sb, writable, expect_under)
    if found.proc.returncode != 0 or not found.inside:
        raise StageError(
            "install",
            f"`vllm` does not resolve to the fork (found {found.where}):\n"
            f"{tail(found.proc.stderr or found.proc.stdout)}",
        )


def fork_dirs(work: Path) -> tuple[Path, ...]:
    """The fork's installed trees (its files, the shadow, the private venv): bound into a
    namespace sandbox, which otherwise sees an empty /tmp where the work dir may be."""
    return tuple(p for p in (work / "fork", work / "shadow", work / "venv") if p.is_dir())


def _editable(
    fork: Path,
    work: Path,
    python: str,
    env: dict[str, str],
    deadline: float,
    log: Path,
    installed: Path,
    native: list[str],
    sb: Sandbox | None = None,
) -> Installed:
    venv = work / "venv"
    left = lambda: deadline - time.monotonic()  # noqa: E731
    proc = _run(
        [python, "-m", "venv", "--without-pip", str(venv)],
        env=env,
        cwd=work,
        timeout=left(),
        log=log,
    )
    if proc.returncode != 0:
        raise StageError(
            "install", f"cannot create the private venv:\n{tail(proc.stderr)}", internal=True
        )
    vpy = venv / "bin" / "python"
    code = "import site; print('\\n'.join(site.getsitepackages()))"
    base_sites = _run([python, "-c", code], env=env, cwd=work, timeout=left()).stdout.split()
    venv_sites = _run([str(vpy), "-c", code], env=env, cwd=work, timeout=left()).stdout.split()
    if not venv_sites:
        raise StageError("install", "the private venv has no site-packages", internal=True)
    # 'zz' sorts last: the venv's own site-packages (the editable fork) come before the base.
    Path(venv_sites[0], "zz-kitebench-base.pth").write_text("\n".join(base_sites) + "\n")
    cmd = [
        python,
        "-m",
        "pip",
        "--python",
        str(vpy),
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "--no-input",
        "-e",
        str(fork),
    ]
    if sb is not None and sb.separate_uid:  # its setup.py builds in the fork, pip writes the venv
        for tree in (fork, venv):
            give_tree(sb, tree)
    proc = _run(cmd, env=env, cwd=fork, timeout=left(), log=log, sb=sb, writable=(fork, venv))
    if proc.returncode != 0:
        raise StageError(
            "install",
            f"pip install -e of the fork failed (exit code {proc.returncode}); "
            f"native sources: {', '.join(native[:5])}\n{tail(proc.stdout + proc.stderr)}",
        )
    # PYTHONPATH first: the fork's tree (with its in-place built extensions) wins over the base.
    return Installed(
        "editable", str(vpy), {"PYTHONPATH": str(fork)}, fork / "vllm", installed, native, log=log
    )


def torch_version(python: str, env: dict[str, str], cwd: Path) -> str:
    """torch of the vLLM environment (``system.torch``), not of the runner's interpreter."""
    code = "import importlib.metadata as m; print(m.version('torch'))"
    try:
        out = subprocess.run(
            [python, "-c", code],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def give_tree(sb: Sandbox, root: Path) -> None:
    """Every dir and file under ``root`` to the submission's uid (links are not followed)."""
    uid, gid = sb.uid, sb.gid if sb.gid is not None else sb.uid
    assert uid is not None
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
    os.chown(root, uid, gid)
