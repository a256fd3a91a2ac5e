"""Errors of the control plane. The CLI maps each class to one readable line and an exit code:

    KitebenchError      base; exit 3 unless a subclass says otherwise
    ├── UsageError      bad input from the user (task dir, flags, files); exit 2
    │   └── TaskError   a task.yml that cannot be turned into a payload
    └── InfraError      something between us and the result failed (API, docker); exit 3
"""

from __future__ import annotations


class KitebenchError(Exception):
    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(KitebenchError):
    exit_code = 2


class TaskError(UsageError):
    pass


class InfraError(KitebenchError):
    exit_code = 3
