"""kitebench control plane: task files → payloads, launchers (local, Buildkite), the CLI."""

from contract import __version__

__all__ = ["__version__"]
