"""The host seen by render/check: a root directory and a command runner, both injectable.

Tests point ``root`` at a temporary tree and the runner's PATH at stand-in executables
(``nvidia-smi``, ``systemctl``, ``docker``); on a vendor host both are the real thing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def brief(self) -> str:
        """The first line of stderr (or stdout): enough to say why a command failed."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[0][:200] if text else f"exit status {self.returncode}"


class CommandRunner(Protocol):
    def __call__(self, argv: Sequence[str], timeout: float = ...) -> CommandResult: ...


@dataclass
class SubprocessRunner:
    """Runs commands for real; a missing executable is exit status 127, never an exception."""

    env: Mapping[str, str] | None = None
    default_timeout: float = 30.0

    def __call__(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("LC_ALL", "C")
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout or self.default_timeout,
                check=False,
            )
        except FileNotFoundError:
            return CommandResult(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"{argv[0]}: timed out")
        except OSError as e:
            return CommandResult(126, "", f"{argv[0]}: {e}")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Host:
    root: Path = Path("/")
    run: CommandRunner = field(default_factory=SubprocessRunner)

    def path(self, absolute: str | os.PathLike[str]) -> Path:
        """A host path (``/etc/...``) inside this host's root."""
        return self.root / str(absolute).lstrip("/")
