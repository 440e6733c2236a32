"""``bench/simulate.py`` at a small scale: the orderings the figure must show hold, widely."""

from __future__ import annotations

from bench import simulate


def test_a_simulated_day_orders_the_policies_as_expected() -> None:
    rows = {row["scenario"]: row for row in simulate.simulate(users=1000, requests=20_000)}
    base = rows["baseline"]
    sliding = rows["+ sliding expiration"]
    ahead = rows["+ refresh-ahead"]
    both = rows["+ both"]
    for row in rows.values():  # every IdP call is either paid by a request or ahead of one
        assert row["idp_calls"] == row["sync_idp_calls"] + row["refresh_ahead"]
    assert base["refresh_ahead"] == 0 and sliding["refresh_ahead"] == 0
    assert base["sync_idp_calls"] > 100  # the day crosses the 24 h boundary of many entries
    # Refresh-ahead moves the hot users' refreshes off the request path.
    assert ahead["refresh_ahead"] > 0
    assert ahead["sync_idp_calls"] < 0.8 * base["sync_idp_calls"]
    # Sliding expiration keeps read entries in Redis: fewer misses, fewer IdP calls.
    assert sliding["l2_hit_ratio"] > base["l2_hit_ratio"] + 0.01
    assert sliding["sync_idp_calls"] < 0.6 * base["sync_idp_calls"]
    assert sliding["idp_calls"] < 0.6 * base["idp_calls"]
    # With both, the entries reaching their max age are refreshed ahead too.
    assert both["refresh_ahead"] > 0
    assert both["sync_idp_calls"] < sliding["sync_idp_calls"]
    # The L1 sees the same requests in every configuration.
    assert len({row["l1_hit_ratio"] for row in rows.values()}) == 1
