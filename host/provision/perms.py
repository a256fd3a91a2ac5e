"""Who could change a file the agents trust (hooks, the token, units): anyone but root?"""

from __future__ import annotations

from pathlib import Path


def tamperable(path: Path) -> str | None:
    """Why a file or directory could be changed by someone other than root (None: it cannot)."""
    try:
        st = path.lstat()
    except OSError as e:
        return f"cannot stat: {e.strerror}"
    if st.st_uid != 0:
        return f"owner uid {st.st_uid}, want root"
    if st.st_mode & 0o022:
        return f"mode {st.st_mode & 0o777:04o} is group/world-writable"
    return None


def dirs_up(directory: str) -> list[str]:
    """``/etc/kitebench/hooks`` → itself and its parents below ``/`` (each could swap the hooks)."""
    parts = Path(directory).parts[1:]
    return ["/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
