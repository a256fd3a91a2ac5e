"""What a run may leave behind, found and cleaned: the processes carrying a run's token, the
files its attack aimed at, and the size of a tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.adversarial.support import Attack


def marked_processes(token: str) -> list[str]:
    """Processes (any thread) named after the token or carrying it on their command line."""
    mark = ("kbadv" + token)[:15].encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(pid)
                    continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm", "rb") as f:
                    if f.read().strip() == mark:
                        found.append(pid)
                        break
        except OSError:
            continue
    return found


def kill_marked(token: str) -> None:
    """Clean up after a defence that failed: the attack's processes must not live on."""
    for _ in range(50):
        pids = marked_processes(token)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)


def _target_globs(attack: Attack | None, token: str, home: str, purelibs: list[str]) -> list[str]:
    # everywhere any attack may drop a file, plus what this one aimed at in particular
    generic = ["/tmp/*{token}*", "/dev/shm/*{token}*", "/etc/*{token}*", "/etc/*/*{token}*",
               "/root/*{token}*", "/root/.*/*{token}*", "{home}/*{token}*", "{home}/.*/*{token}*",
               "{home}/.local/lib/*/site-packages/*{token}*", "{purelib}/*{token}*"]
    pats = generic + list(attack.targets if attack else ())
    out = []
    for p in pats:
        for purelib in purelibs:
            out.append(p.format(token=token, home=home, purelib=purelib))
    return sorted(set(out))


def leftover_files(attack: Attack | None, token: str, home: str, purelibs: list[str]) -> list[str]:
    import glob

    found: list[str] = []
    for pat in _target_globs(attack, token, home, purelibs):
        found += glob.glob(pat)
    return sorted(set(found))


def force_remove(path: Path) -> None:
    """rm -rf that gets through a tree an attack locked (0000 dirs), never following a link.
    The suite's own cleanup: it must not rely on the code under test."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            path.unlink()
        return
    for dirpath, dirs, _files in os.walk(path, topdown=True, followlinks=False):
        for d in dirs:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                with contextlib.suppress(OSError):
                    os.chmod(full, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(paths: list[str]) -> None:
    for p in paths:
        force_remove(Path(p))


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total
