"""The simulated world's mutable state: locations, products, stock, sessions, users,
tenants and orders (plain slotted records; the event builders change them).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Location:
    location_id: str
    currency: str
    tax_bp: int
    shipping_fees: tuple[int, ...]
    free_shipping_cents: int


@dataclass(slots=True, eq=False)
class Product:
    product_id: str
    variant_id: str
    sku: str
    name: str
    prices: dict[str, int]  # currency -> unit price in cents
    supplier: str


@dataclass(slots=True, eq=False)
class Stock:
    product: Product
    location: Location
    inventory_id: str
    on_hand: int
    reorder_point: int
    reorder_quantity: int
    low: bool = False  # a low-stock alert is out and no restock has cleared it
    restock_pending: bool = False
    last_sold: int | None = None


@dataclass(slots=True, eq=False)
class Session:
    session_id: str
    ip: str
    user_agent: str
    device_type: str
    started: int
    ends: int


@dataclass(slots=True, eq=False)
class User:
    user_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    timezone: str
    home: tuple[str, str]
    ip: str
    device_type: str
    user_agent: str
    registration_method: str
    referral_source: str
    activity: float
    card_brand: str
    card_last_four: str
    store: Location
    is_staff: bool
    registered_at: int = -1
    session: Session | None = None


@dataclass(slots=True, eq=False)
class Tenant:
    index: int
    tenant_id: str
    slug: str
    staff: list[User]
    pending: list[User]  # not registered yet, next to register last
    locations: list[Location]
    products: list[Product]
    product_cum_weights: list[float]
    stock: dict[tuple[int, int], Stock]
    customer_count: int
    registered: list[User] = field(default_factory=list)
    online: list[User] = field(default_factory=list)  # customers who logged in (pruned lazily)
    order_seq: int = 0


@dataclass(slots=True, eq=False)
class Order:
    order_id: str
    order_number: str
    tenant: Tenant
    customer: User
    currency: str
    total_cents: int
    ctx: tuple[str, str, str]
    status: str = "pending"
    payment_id: str | None = None
    paid_cents: int = 0
    refunded_cents: int = 0
