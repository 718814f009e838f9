"""What a server adapter hands to the app: one request, the mount prefix already stripped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Incoming:
    """A request as the adapters hand it over (the mount prefix already stripped)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    root: str = ""
