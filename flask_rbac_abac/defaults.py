"""The library's defaults, in one place.

:mod:`.config` fills them into ``app.config`` (``init_app``), and the keyword constructors of the
classes usable outside Flask (:class:`.RedisAttributeClient`, :class:`.IdentityProviderClient`,
:class:`.JWTVerifier`, :func:`.connection.connect`) take them as their parameter defaults, so a
default is changed here once and both ways of building a client agree. This module imports
nothing, so every other module may import it without a cycle. (The key prefix's default belongs
to the key schema and lives there: ``DEFAULT_KEY_PREFIX``.)
"""

from __future__ import annotations

#: ``RBAC_ABAC_CACHE_TTL``: seconds an entry lives in Redis. Long on purpose: freshness comes
#: from invalidations and versions, not from expiry (a short TTL was the original outage).
DEFAULT_CACHE_TTL = 86400
#: ``IDENTITY_PROVIDER_URL``: the IdP's base URL (the demo's service name in a compose network).
DEFAULT_IDP_URL = "http://identity-provider:8000"
#: ``RBAC_ABAC_REDIS_URL``.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: ``RBAC_ABAC_AUTO_REFRESH``: a miss asks the IdP (else it is answered as "no attributes").
DEFAULT_AUTO_REFRESH = True
#: ``RBAC_ABAC_INVALIDATION``: run the invalidation subscriber thread.
DEFAULT_INVALIDATION = True
#: ``RBAC_ABAC_LOCAL_CACHE_SIZE``: entries held in the in-process L1.
DEFAULT_LOCAL_CACHE_SIZE = 10000
#: ``RBAC_ABAC_LOCAL_CACHE_TTL``: seconds an L1 entry is fresh; bounds staleness when every
#: invalidation message is lost.
DEFAULT_LOCAL_CACHE_TTL = 60
#: ``RBAC_ABAC_MAX_STALE``: seconds past its freshness an L1 entry may be served while the IdP
#: fails (stale-if-error); 0 turns that off.
DEFAULT_MAX_STALE = 300
#: ``RBAC_ABAC_REDIS_TIMEOUT``: connect and socket timeout of every Redis call, in seconds.
DEFAULT_REDIS_TIMEOUT = 0.25
#: ``RBAC_ABAC_IDP_TIMEOUT``: ``(connect, read)`` seconds of every call to the IdP.
DEFAULT_IDP_TIMEOUT: tuple[float, float] = (0.5, 3.0)
#: ``RBAC_ABAC_JWT_AUDIENCE``: the ``aud`` a bearer token must carry.
DEFAULT_AUDIENCE = "rbac-abac"
#: ``RBAC_ABAC_JWT_ISSUER``: the ``iss`` a bearer token must carry.
DEFAULT_ISSUER = "rbac-abac-idp"
#: ``RBAC_ABAC_REQUIRE_AUTHORIZATION``: refuse a view with neither a rule nor ``@public``.
DEFAULT_REQUIRE_AUTHORIZATION = False
#: ``RBAC_ABAC_JWKS_TIMEOUT``: seconds for each socket operation of a JWKS fetch.
DEFAULT_JWKS_TIMEOUT = 2.0
#: ``RBAC_ABAC_JWKS_LIFESPAN``: seconds a fetched JWKS is used before it is fetched again.
DEFAULT_JWKS_LIFESPAN = 300
#: ``RBAC_ABAC_JWT_USER_CLAIM``: the claim that carries the user id.
DEFAULT_JWT_USER_CLAIM = "sub"
#: ``RBAC_ABAC_JWT_ALGORITHMS`` unset, with a public key or a JWKS: what a token may be signed
#: with (HS256 is only ever used with ``RBAC_ABAC_JWT_SECRET``).
DEFAULT_ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
#: ``RBAC_ABAC_TOKEN_CACHE_SIZE``: verified tokens remembered until their ``exp``.
DEFAULT_TOKEN_CACHE_SIZE = 10000
#: ``RBAC_ABAC_REFRESH_AHEAD``: a read of an entry with less than this fraction of its Redis TTL
#: left refreshes it in the background (once per key fleet-wide); 0 turns that off.
DEFAULT_REFRESH_AHEAD = 0.1
#: ``RBAC_ABAC_SLIDING_EXPIRATION``: reads extend an entry's Redis TTL (opt-in).
DEFAULT_SLIDING_EXPIRATION = False
#: ``RBAC_ABAC_MAX_AGE``: seconds since its ``fetched_at`` past which sliding expiration no longer
#: extends an entry and a read refreshes it from the IdP (7 days).
DEFAULT_MAX_AGE = 7 * 86400
