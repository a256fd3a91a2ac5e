"""The one check-result type of the vendor plane's checklists (``kitebench vendor check`` and
``kitebench image validate``): PASS, FAIL or SKIP (it cannot be judged because something it needs
failed), a one-line detail a vendor can act on, and the data behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class CheckResult:
    id: str  #: stable name, e.g. ``runner-image`` or ``entrypoint``
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    title: str = ""  #: for tables; the id when empty

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title or self.id, "status": str(self.status),
                "detail": self.detail, "data": self.data}


def counts(results: list[CheckResult]) -> dict[str, int]:
    return {str(s): sum(r.status == s for r in results) for s in Status}
