"""The stream simulator: ``Simulator`` (its configuration and ``events``) and the run
loop that interleaves the spontaneous actions with the scheduled consequences.

``Simulator`` gives a realistic mixed stream of all 15 types with coherent state (users
register before they act, payments match their orders, refunds never exceed their
payment, stock levels follow sales), used by ``analytics simulate``, tests and benchmarks.
Deterministic: the same arguments give the same events, byte for byte, on every run. The
one exception is ``Simulator``'s default ``start``, which is "today 00:00 UTC minus
``days``"; pass ``start`` for a fixed stream.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from loadgen.catalog import LATE_DELIVERY, busy_time, from_busy_time
from loadgen.orders import OrderEvents


class Simulator:
    """A deterministic, realistic mixed stream of the 15 contract event types.

    Each tenant (``tenant-1``, ``tenant-2``, ...) has ``users_per_tenant`` users (the first
    one to three are staff who restock, adjust stock and ship orders), ``products_per_tenant``
    products stocked at ``max(2, len(currencies))`` locations (location *i* sells in
    ``currencies[i % len(currencies)]``), and a popularity-skewed catalogue. Users register
    through the period (10% at the start), log in, browse in sessions and order; orders
    are paid (or fail and are retried or abandoned), processed, shipped, fulfilled, cancelled
    and refunded; sales draw stock down into low-stock and out-of-stock alerts and restocks.
    Traffic follows a day/night curve over ``days`` days from ``start``.
    """

    def __init__(
        self,
        tenants: int = 2,
        seed: int = 0,
        start: datetime | None = None,
        days: int = 1,
        users_per_tenant: int = 50,
        products_per_tenant: int = 20,
        currencies: tuple[str, ...] = ("USD", "EUR"),
    ) -> None:
        if tenants < 1:
            raise ValueError("tenants must be at least 1")
        if days <= 0:
            raise ValueError("days must be positive")
        if users_per_tenant < 2:
            raise ValueError("users_per_tenant must be at least 2 (one staff, one customer)")
        if products_per_tenant < 1:
            raise ValueError("products_per_tenant must be at least 1")
        if not currencies or any(len(code) != 3 or not code.isalpha() for code in currencies):
            raise ValueError("currencies must be a non-empty tuple of 3-letter codes")
        if start is None:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start = today - timedelta(days=days)
        elif start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.tenants = tenants
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.days = days
        self.users_per_tenant = users_per_tenant
        self.products_per_tenant = products_per_tenant
        self.currencies = tuple(code.upper() for code in currencies)

    @property
    def tenant_ids(self) -> list[str]:
        """The tenant ids the stream uses: ``tenant-1`` .. ``tenant-N``."""
        return [f"tenant-{index + 1}" for index in range(self.tenants)]

    @property
    def end(self) -> datetime:
        """Every event's timestamp is before this (``start + days``)."""
        return self.start + timedelta(days=self.days)

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        """Yield `count` envelopes: a realistic mix of all 15 types with coherent state.

        Every call replays the simulation from the seed, so it always yields the same
        stream; the count sets the pace (the events fill the whole period), so a shorter
        stream is not a prefix of a longer one. Timestamps never decrease except for ~1%
        of events (never a registration) that are delivered a few positions late.
        """
        if count < 0:
            raise ValueError("count must not be negative")
        return World(self, count).run()


class World(OrderEvents):
    """One run of the simulation: the main loop over the spontaneous and scheduled actions."""

    def run(self) -> Iterator[dict[str, Any]]:
        rng, out, heap = self.rng, self.out, self.heap
        held: list[tuple[int, dict[str, Any]]] = []  # (deliver after this many, envelope)
        delivered = 0
        while self.produced < self.count:
            if heap and heap[0][0] <= self.next_spontaneous:
                when, _seq, action, args = heapq.heappop(heap)
                action(when, *args)
            else:
                now = self.next_spontaneous
                self.spontaneous(now)
                self.spontaneous_actions += 1
                self.next_spontaneous = self.advance(now)
            for event in out:
                if self.produced >= self.count:
                    break
                self.produced += 1
                if event["event_type"] != "user.registered" and rng.random() < LATE_DELIVERY:
                    held.append((delivered + rng.randint(2, 25), event))
                    continue
                yield event
                delivered += 1
                while held:
                    due = next((i for i, item in enumerate(held) if item[0] <= delivered), None)
                    if due is None:
                        break
                    yield held.pop(due)[1]
                    delivered += 1
            out.clear()
        for _deliver_after, event in held:
            yield event

    def advance(self, now: int) -> int:
        """The time of the next spontaneous action, paced so the stream fills the period.

        Actions are a Poisson process in "busy time" (the day/night curve integrated), with
        the rate re-estimated at each step from the events still to produce, the events each
        action has led to so far and the follow-ups already scheduled inside the period.
        """
        pending = len(self.heap)
        per_action = (self.produced + pending + 30.0) / (self.spontaneous_actions + 10.0)
        actions_left = max(1.0, (self.count - self.produced - pending) / per_action)
        busy_now = busy_time(now)
        mean_gap = (busy_time(self.end) - busy_now) / (actions_left + 1.0)
        following = max(now + 1, from_busy_time(busy_now + self.rng.expovariate(1.0) * mean_gap))
        if following >= self.end:
            following = now + (self.end - now) // 2
        return following

    def spontaneous(self, now: int) -> None:
        rng = self.rng
        tenant = self.tenants[bisect_right(self.tenant_cum_weights, rng.random() * 0.999999)]
        if tenant.pending:
            progress = (now - self.start) / (self.end - self.start)
            customers = tenant.customer_count
            target = len(tenant.staff) + max(min(3, customers), customers * (0.1 + 0.9 * progress))
            if len(tenant.registered) < target:
                self.register(now, tenant)
                return
        roll = rng.random()
        if roll < 0.52:
            done = self.login(now, tenant, None)
        elif roll < 0.90:
            done = self.create_order(now, tenant)
        elif roll < 0.95:
            done = self.update_profile(now, tenant)
        else:
            done = self.adjust_stock(now, tenant)
        if not done and not self.login(now, tenant, None) and not self.create_order(now, tenant):
            self.adjust_stock(now, tenant)
