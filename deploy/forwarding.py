"""What the ingress hands a replica, and what comes back: an HTTP exchange as plain data (Ray
pickles it), and the affinity key the router reads off a request's texts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

# Paths whose JSON body carries texts (`texts`, or one `text`): the key is computed from them.
TEXT_PATHS = frozenset({"/classify", "/classify/single"})


@dataclass(frozen=True)
class ForwardedRequest:
    method: str
    path: str
    query: bytes = b""
    # Raw header pairs, as ASGI gives them (credentials included: the replica checks them).
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class ForwardedResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    body: bytes = b""
    # The replica that answered (its Ray Serve replica id), for the X-Capserve-Replica header.
    replica: str = ""


def affinity_key(path: str, body: bytes) -> str | None:
    """A digest of the request's texts (in order), or None when it has none to hash (another
    path, or a body the replica will refuse): the router then balances on load alone. Equal
    text lists get equal keys, so a repeated request lands where its results and KV blocks are."""
    if path not in TEXT_PATHS or not body:
        return None
    try:
        data = json.loads(body)
        texts = [data["text"]] if path == "/classify/single" else data.get("texts")
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return None
    digest = hashlib.blake2b(digest_size=16)
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
