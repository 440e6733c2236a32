"""Micro-benchmarks, in ns per operation: the pieces of a protected request on their own.

- token verification, cached (the verified-token cache answers) and uncached (two tokens take
  turns in a cache of one, so every call verifies the HS256 signature and the claims);
- attribute lookup, L1 hit and L2 hit (L1 cleared before each lookup; the clear is included and
  costs next to nothing beside the Redis round trip);
- for scale, what the two tiers are built on: a bare ``cachetools.TTLCache`` hit, and a Redis
  ``GET`` + ``json.loads`` (the original design's per-request lookup);
- rule evaluation: ``role("admin")``, and a rule of three (role, permission and attribute).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

from bench.common import ATTRS, AUDIENCE, ISSUER, REDIS_URL, SECRET, SERVICE, alternate, token
from flask_rbac_abac import RedisAttributeClient, UserAttributes, attribute, permission, role
from flask_rbac_abac.identity import JWTVerifier
from flask_rbac_abac.rules import Context

LABELS = {
    "token_cached": "token verification, cached",
    "token_uncached": "token verification, uncached (HS256)",
    "l1_hit": "attribute lookup, L1 hit",
    "l2_hit": "attribute lookup, L2 hit (Redis GET + decode)",
    "ttlcache_hit": "for scale: a bare cachetools.TTLCache hit",
    "redis_get": "for scale: Redis GET + json.loads",
    "rule_role": "rule evaluation: role('admin')",
    "rule_composite": "rule evaluation: role & permission & attribute",
}


def _verifier(cache_size: int) -> JWTVerifier:
    return JWTVerifier(SECRET, "HS256", audience=AUDIENCE, issuer=ISSUER, cache_size=cache_size)


def run(prefix: str, *, seconds: float, rounds: int) -> dict[str, Any]:
    header = f"Bearer {token()}"
    cached = _verifier(16)
    assert cached.user_id(header) == ATTRS.user_id
    uncached = _verifier(1)
    turns = [f"Bearer {token(jti='a')}", f"Bearer {token(jti='b')}"]
    flip = [0]

    def verify_uncached() -> object:
        flip[0] ^= 1
        return uncached.user_id(turns[flip[0]])

    client = RedisAttributeClient(
        REDIS_URL, service_name=SERVICE, key_prefix=prefix, invalidation=False
    )
    client.set_user_attributes(ATTRS)
    local = client.local

    def l2_hit() -> object:
        local.clear()
        return client.get_user_attributes(ATTRS.user_id)

    ttl_cache: TTLCache[int, UserAttributes] = TTLCache(10000, 60)
    ttl_cache[ATTRS.user_id] = ATTRS
    raw_key = client.key(ATTRS.user_id)

    ctx = Context(user=ATTRS)
    single = role("admin")
    composite = role("admin") & permission("invoice:read") & attribute("department", "finance")
    assert single.evaluate(ctx).allowed and composite.evaluate(ctx).allowed

    ops: dict[str, Callable[[], object]] = {
        "token_cached": lambda: cached.user_id(header),
        "token_uncached": verify_uncached,
        "l1_hit": lambda: client.get_user_attributes(ATTRS.user_id),
        "l2_hit": l2_hit,
        "ttlcache_hit": lambda: ttl_cache[ATTRS.user_id],
        "redis_get": lambda: json.loads(client.redis.get(raw_key)),
        "rule_role": lambda: single.evaluate(ctx),
        "rule_composite": lambda: composite.evaluate(ctx),
    }
    results: dict[str, Any] = {}
    try:
        timed = alternate(ops, seconds=seconds, rounds=rounds)  # alternating here too: drift
        for key in ops:
            results[key] = {"label": LABELS[key], "ns_per_op": timed.median(key) * 1e9}
    finally:
        client.close()
    return {"seconds": seconds, "rounds": rounds, "ops": results}
