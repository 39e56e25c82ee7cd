"""The one JSON encoder for what leaves the process as JSON: jsonb parameters, SSE `data:`,
outgoing webhook bodies. msgspec's defaults (UUIDs and datetimes as strings, Structs as objects);
encoders with other options (the log formatter's `enc_hook=str`) stay where they are used."""

from __future__ import annotations

from typing import Any, Final

import msgspec

ENCODER: Final = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return ENCODER.encode(value)


def encode_str(value: Any) -> str:
    return ENCODER.encode(value).decode()
