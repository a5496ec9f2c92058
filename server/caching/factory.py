"""Builds the result cache from the `cache:` section of the configuration."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping

from capabilities.registry import CapabilityRegistry
from schemas.config import CacheConfig
from server.caching.keys import CacheKeys
from server.caching.lookup import ResultLookup
from server.caching.memory import MemoryStore
from server.caching.redis_store import RedisStore
from server.caching.result_cache import ResultCache
from server.settings import ConfigError

log = logging.getLogger(__name__)


def exclude_problem(config: CacheConfig, registry: CapabilityRegistry) -> str | None:
    """What is wrong with `cache.exclude` for this capability set (checked again on reload)."""
    unknown = sorted(set(config.exclude) - set(registry.names()))
    if not unknown:
        return None
    return (
        f"cache.exclude: unknown capability {', '.join(repr(n) for n in unknown)}; "
        f"valid capabilities: {', '.join(registry.names())}"
    )


def build_result_lookup(
    config: CacheConfig,
    registry: CapabilityRegistry,
    environ: Mapping[str, str] | None = None,
) -> ResultLookup | None:
    """The cache the pipeline uses; None when `cache.enabled` is false."""
    if not config.enabled:
        return None
    env = os.environ if environ is None else environ
    problem = exclude_problem(config, registry)
    if problem is not None:
        raise ConfigError(problem)
    secret = env.get(config.secret_env, "").encode("utf-8")
    if not secret:
        secret = secrets.token_bytes(32)
        if config.redis_url:
            log.warning(
                "result cache: $%s is not set, so text hashes use a random per-process secret "
                "and replicas cannot share Redis results",
                config.secret_env,
            )
    redis = None
    if config.redis_url:
        redis = RedisStore(
            config.redis_url,
            password=env.get(config.redis_password_env) or None,
            ttl_s=config.ttl_s,
            timeout_s=config.redis_timeout_s,
            retry_after_s=config.redis_retry_after_s,
        )
    memory = MemoryStore(config.max_entries, config.ttl_s)
    log.info(
        "result cache: L1 up to %d results, ttl %g s, L2 %s",
        config.max_entries,
        config.ttl_s,
        redis.where if redis else "off",
    )
    return ResultLookup(CacheKeys(registry, secret), ResultCache(memory, redis), config.exclude)
