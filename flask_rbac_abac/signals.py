"""Blinker signals, for audit logs and custom metrics.

Every signal is sent with the Flask app as sender, so ``signal.connect(receiver, sender=app)``
hears one app's events; ``cache_invalidated`` too, although the invalidation subscriber's thread
sends it outside any app context (the client keeps its app, see
:attr:`RedisAttributeClient.owner`). A standalone :class:`RedisAttributeClient` (built outside
Flask) has no app: its signals come from the client itself.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after every authorization decision, with ``user_id``, ``allowed``, ``reason``, ``rule``.
decision_made = _signals.signal("rbac-abac-decision-made")

#: Sent when attributes were fetched from the identity provider, with ``attributes`` and
#: ``manual`` (``True`` for an explicit refresh call).
attributes_refreshed = _signals.signal("rbac-abac-attributes-refreshed")

#: Sent when the invalidation subscriber evicted local entries, with ``user_id``,
#: ``service_name`` (``None`` for every service) and ``version``.
cache_invalidated = _signals.signal("rbac-abac-cache-invalidated")

#: Sent when a stale value was served because the identity provider failed, with
#: ``attributes`` and ``age`` in seconds.
stale_served = _signals.signal("rbac-abac-stale-served")
