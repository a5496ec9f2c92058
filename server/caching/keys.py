"""Cache keys for one (capability, text): never the text itself.

A key is made of the capability's name, a fingerprint of the versions of the capability and of
every capability it depends on (its dependency closure), and an HMAC-SHA256 of the text under a
server secret. A new version anywhere in the closure gives new keys; without the secret nobody
can tell which text a key stands for.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from capabilities.registry import CapabilityRegistry

# Bumped when the key layout or the stored value format changes.
KEY_PREFIX = "capserve:result:v1:"
# Texts whose digest is remembered: a text is looked up on arrival, again per dependency level
# of its window and once more when its results are stored; each HMAC is computed once.
DIGESTS_REMEMBERED = 4096


@dataclass(frozen=True)
class CacheKey:
    capability: str
    # What both levels store the result under.
    value: str


class CacheKeys:
    def __init__(self, registry: CapabilityRegistry, secret: bytes) -> None:
        if not secret:
            raise ValueError("the cache key secret must not be empty")
        self._registry = registry
        self._secret = secret
        self._fingerprints: dict[str, str] = {}
        self._digests = functools.lru_cache(maxsize=DIGESTS_REMEMBERED)(self._hmac)

    def for_registry(self, registry: CapabilityRegistry) -> CacheKeys:
        """Keys under the same secret for another capability set (after a reload): a text's
        digest stays the same, versions come from `registry`."""
        return CacheKeys(registry, self._secret)

    def _hmac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def text_digest(self, text: str) -> str:
        """The keyed hash of a text (hex); the same for every capability."""
        return self._digests(text)

    def closure_fingerprint(self, capability: str) -> str:
        """A hash of the versions of `capability` and of every capability it depends on (the
        registry of these keys never changes: computed once per capability)."""
        found = self._fingerprints.get(capability)
        if found is None:
            closure = self._registry.resolve([capability])
            versions = ";".join(f"{name}={self._registry.get(name).version}" for name in closure)
            found = hashlib.sha256(versions.encode("utf-8")).hexdigest()[:24]
            self._fingerprints[capability] = found
        return found

    def key(self, capability: str, text: str) -> CacheKey:
        return self.compose(
            capability, self.closure_fingerprint(capability), self.text_digest(text)
        )

    @staticmethod
    def compose(capability: str, fingerprint: str, digest: str) -> CacheKey:
        """The key from parts computed once by the caller (see `closure_fingerprint`,
        `text_digest`)."""
        return CacheKey(capability, f"{KEY_PREFIX}{capability}:{fingerprint}:{digest}")
