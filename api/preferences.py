"""Request headers that shape a creation: `Prefer: wait=N` (RFC 7240, as Replicate has it) and
`Cancel-After` (Replicate's deadline header: `90`, `90s`, `5m`, `1h30m`)."""

from __future__ import annotations

import re

from api.problems import InvalidField
from api.schemas import MAX_DEADLINE_S

MAX_WAIT_S = 60
_WAIT = re.compile(r"^\s*wait\s*=\s*(\S*?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,7})s?)?$")


def parse_prefer(header: str | None) -> int | None:
    """The `wait` preference in seconds, None when absent. Other preferences are ignored (RFC
    7240); a `wait` that is not an integer from 0 to 60 is a 422 on the header."""
    if not header:
        return None
    for preference in re.split(r"[,;]", header):
        match = _WAIT.match(preference)
        if match is None:
            continue
        value = match[1].strip('"')
        if not value.isascii() or not value.isdigit() or int(value) > MAX_WAIT_S:
            raise InvalidField("Prefer", f"wait must be an integer from 0 to {MAX_WAIT_S} seconds")
        return int(value)
    return None


def parse_cancel_after(header: str | None) -> int | None:
    """`Cancel-After` in whole seconds (1 to a week), None when absent; anything else is a 422
    on the header."""
    if header is None:
        return None
    match = _DURATION.match(header.strip())
    if not header.strip() or match is None or not any(match.groups()):
        raise InvalidField("Cancel-After", "a duration such as 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 1 <= total <= MAX_DEADLINE_S:
        raise InvalidField("Cancel-After", f"from 1 second to {MAX_DEADLINE_S // 86400} days")
    return total
