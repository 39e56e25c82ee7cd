"""What an emulator received, for tests to assert on, and what it should answer next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Scripted:
    """A canned answer: the next matching request gets it instead of the normal one."""

    status: int
    body: bytes | str | dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Recorder:
    requests: list[Recorded] = field(default_factory=list)
    scripted: list[Scripted] = field(default_factory=list)

    def script(self, *answers: Scripted) -> None:
        self.scripted.extend(answers)

    def next_scripted(self) -> Scripted | None:
        return self.scripted.pop(0) if self.scripted else None

    def reset(self) -> None:
        self.requests.clear()
        self.scripted.clear()
