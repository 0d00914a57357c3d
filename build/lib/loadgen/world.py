"""The core of one simulation run: building the tenants and users, the event queue
(``later``) and ``emit``, which stamps an envelope; the event builders build on it.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from loadgen.catalog import (
    ADJECTIVES,
    CARD_BRANDS,
    CITIES,
    CITY_CUM_WEIGHTS,
    CURRENCY_RULES,
    DAY,
    DEVICE_AGENTS,
    DEVICES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    INVENTORY_AGENT,
    LAST_NAMES,
    LATENCY_MS,
    NOUNS,
    OTHER_CURRENCY,
    REFERRAL_SOURCES,
    REGISTRATION_METHODS,
    SECOND,
    SUPPLIERS,
    TENANT_SLUGS,
    TIMEZONES,
    UNITS_PER_EVENT,
)
from loadgen.seeds import EPOCH, format_micros, make_envelope
from loadgen.state import Location, Product, Stock, Tenant, User

if TYPE_CHECKING:
    from loadgen.simulator import Simulator


class WorldSetup:
    """The tenants, users, ids and addresses of a run, drawn from its seeded RNG.

    ``WorldBase`` holds the RNG (``self.rng``)."""

    rng: random.Random

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _ip(self) -> str:
        rng = self.rng
        if rng.random() < 0.06:
            groups = ":".join(f"{rng.getrandbits(16):x}" for _ in range(3))
            return f"2001:db8:{groups}::{rng.randrange(1, 0xFFFF):x}"
        prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return f"{prefix}.{rng.randrange(1, 255)}"

    def _make_tenant(self, index: int, config: Simulator, daily_units: float) -> Tenant:
        rng = self.rng
        slug = TENANT_SLUGS[index] if index < len(TENANT_SLUGS) else f"shop-{index + 1}"
        locations = []
        for position in range(max(2, len(config.currencies))):
            currency = config.currencies[position % len(config.currencies)]
            _factor, taxes, fees = CURRENCY_RULES.get(currency, OTHER_CURRENCY)
            locations.append(
                Location(
                    location_id=self.uid(),
                    currency=currency,
                    tax_bp=rng.choice(taxes),
                    shipping_fees=fees,
                    free_shipping_cents=round(
                        7500 * CURRENCY_RULES.get(currency, OTHER_CURRENCY)[0]
                    ),
                )
            )
        names = [(a, n) for a in ADJECTIVES for n in NOUNS]
        rng.shuffle(names)
        products = []
        for number in range(config.products_per_tenant):
            (adjective, (noun, base_cents)) = names[number % len(names)]
            name = f"{adjective} {noun}"
            if number >= len(names):
                name = f"{name} {number // len(names) + 1}"
            base = base_cents * rng.choice((0.8, 0.9, 1.0, 1.0, 1.1, 1.25))
            prices = {}
            for currency in config.currencies:
                factor = CURRENCY_RULES.get(currency, OTHER_CURRENCY)[0]
                prices[currency] = max(99, int(base * factor) // 100 * 100 + 99)
            products.append(
                Product(
                    product_id=self.uid(),
                    variant_id=self.uid(),
                    sku=f"PROD-{number + 1:03d}",
                    name=name,
                    prices=prices,
                    supplier=rng.choice(SUPPLIERS),
                )
            )
        popularity = [1.0 / (rank + 1) ** 0.9 for rank in range(len(products))]
        rng.shuffle(popularity)
        cum, running = [], 0.0
        for weight in popularity:
            running += weight
            cum.append(running)
        stock = {}
        for p, product in enumerate(products):
            # Expected daily demand at one location sets what a buyer would configure:
            # a reorder point covering a restock's lead time (~6 h), orders for 1-3 days.
            demand = daily_units * popularity[p] / running / len(locations)
            for li, location in enumerate(locations):
                reorder_point = max(rng.randint(4, 8), round(demand * rng.uniform(0.15, 0.4)))
                reorder_quantity = max(rng.choice((20, 25, 30, 40, 50)), demand * rng.uniform(1, 3))
                stock[(p, li)] = Stock(
                    product=product,
                    location=location,
                    inventory_id=self.uid(),
                    on_hand=reorder_point + rng.randint(0, max(40, round(demand * 1.5))),
                    reorder_point=reorder_point,
                    reorder_quantity=int(reorder_quantity) // 5 * 5,
                )
        staff_count = min(3, max(1, config.users_per_tenant // 25))
        users = [
            self._make_user(slug, locations, is_staff=number < staff_count)
            for number in range(config.users_per_tenant)
        ]
        return Tenant(
            index=index,
            tenant_id=f"tenant-{index + 1}",
            slug=slug,
            staff=users[:staff_count],
            pending=users[::-1],
            locations=locations,
            products=products,
            product_cum_weights=cum,
            stock=stock,
            customer_count=config.users_per_tenant - staff_count,
        )

    def _make_user(self, slug: str, locations: list[Location], *, is_staff: bool) -> User:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("ü", "ue").replace("é", "e").replace("ó", "o")
        if is_staff:
            email = f"{local}@{slug}.example"
            method, referral = "invite", "internal"
        else:
            email = f"{local}{rng.randrange(1, 1000)}@{rng.choice(EMAIL_DOMAINS)}"
            method, referral = rng.choice(REGISTRATION_METHODS), rng.choice(REFERRAL_SOURCES)
        device = "web" if is_staff else rng.choice(DEVICES)
        home = rng.choices(CITIES, cum_weights=CITY_CUM_WEIGHTS)[0]
        return User(
            user_id=self.uid(),
            first_name=first,
            last_name=last,
            email=email,
            phone=f"+1-555-01{rng.randrange(100):02d}",
            timezone=rng.choice(TIMEZONES),
            home=home,
            ip=f"10.20.{rng.randrange(256)}.{rng.randrange(1, 255)}" if is_staff else self._ip(),
            device_type=device,
            user_agent=rng.choice(DEVICE_AGENTS[device]),
            registration_method=method,
            referral_source=referral,
            activity=rng.choice((0.15, 0.35, 0.6, 1.0)),
            card_brand=rng.choice(CARD_BRANDS),
            card_last_four=f"{rng.randrange(10000):04d}",
            store=rng.choice(locations),
            is_staff=is_staff,
        )


class WorldBase(WorldSetup):
    """One run of the simulation: all mutable state, driven by one seeded RNG."""

    def __init__(self, config: Simulator, count: int) -> None:
        self.rng = rng = random.Random(config.seed)
        self.count = count
        self.start = (config.start - EPOCH) // timedelta(microseconds=1)
        self.end = self.start + round(config.days * DAY)
        self.produced = 0
        self.spontaneous_actions = 0
        self.out: list[dict[str, Any]] = []
        self.heap: list[tuple[int, int, Callable[..., object], tuple[Any, ...]]] = []
        self.seq = 0
        weights = [1.0 / (1.0 + 0.5 * index) for index in range(config.tenants)]
        total = sum(weights)
        self.tenant_cum_weights = [sum(weights[: i + 1]) / total for i in range(len(weights))]
        # Units sold per day per tenant (about one unit per three events), so that stock
        # levels, reorder points and restocks fit the traffic whatever the density.
        daily_units = count / config.days * UNITS_PER_EVENT
        self.tenants = [
            self._make_tenant(index, config, daily_units * weights[index] / total)
            for index in range(config.tenants)
        ]
        self.next_spontaneous = self.start + int(rng.random() * 5 * SECOND)

    # ------------------------------------------------------------------ building blocks

    def later(self, when: int, action: Callable[..., object], *args: Any) -> None:
        """Schedule ``action(when, *args)``; events at or after the end never happen."""
        if when < self.end:
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, action, args))

    def emit(
        self,
        when: int,
        tenant: Tenant,
        event_type: str,
        user_id: str | None,
        data: dict[str, Any],
        ctx: tuple[str, str, str],
    ) -> None:
        rng = self.rng
        ip, agent, session_id = ctx
        metadata: dict[str, Any] = {
            "ip_address": ip,
            "user_agent": agent,
            "session_id": session_id,
            "request_id": self.uid(),
        }
        if rng.random() < 0.5:
            median = LATENCY_MS.get(event_type, 45.0)
            metadata["response_time_ms"] = max(1, int(rng.lognormvariate(math.log(median), 0.6)))
        self.out.append(
            make_envelope(
                event_type,
                data,
                tenant.tenant_id,
                user_id,
                format_micros(when),
                self.uid(),
                metadata,
            )
        )

    def user_ctx(self, user: User, now: int) -> tuple[str, str, str]:
        session = user.session
        if session is not None and session.ends > now:
            return (session.ip, session.user_agent, session.session_id)
        return (user.ip, user.user_agent, self.uid())

    def service_ctx(self, tenant: Tenant) -> tuple[str, str, str]:
        """Who raises system alerts: the inventory service, one request at a time."""
        ip = f"10.0.{tenant.index % 256}.{self.rng.randrange(2, 30)}"
        return (ip, INVENTORY_AGENT, self.uid())

    def staff_member(self, tenant: Tenant) -> User | None:
        staff = [user for user in tenant.staff if user.registered_at >= 0]
        return self.rng.choice(staff) if staff else None

    @staticmethod
    def money(cents: int) -> float:
        return cents / 100
