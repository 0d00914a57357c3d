"""The inventory events of a simulation: sales draw stock down into low-stock and
out-of-stock alerts, restocks and adjustments.
"""

from __future__ import annotations

import math

from loadgen.catalog import ADJUSTMENTS, SECOND
from loadgen.seeds import format_micros
from loadgen.state import Stock, Tenant
from loadgen.world import WorldBase


class StockEvents(WorldBase):
    """Stock levels follow sales; alerts, restocks and adjustments."""

    def sell(self, now: int, tenant: Tenant, stock: Stock, quantity: int) -> None:
        stock.on_hand -= quantity
        stock.last_sold = now
        self.check_levels(now, tenant, stock)

    def check_levels(self, now: int, tenant: Tenant, stock: Stock) -> None:
        """Raise the alerts a level change calls for, a moment later, and order a restock."""
        rng = self.rng
        if stock.on_hand < stock.reorder_point and not stock.low:
            stock.low = True
            self.later(now + rng.randint(50_000, 2 * SECOND), self.low_stock, tenant, stock)
            if not stock.restock_pending:
                stock.restock_pending = True
                lead = min(48 * 3600.0, max(1800.0, rng.lognormvariate(math.log(6 * 3600.0), 0.7)))
                self.later(now + int(lead * SECOND), self.restock, tenant, stock)
        if stock.on_hand == 0:
            self.later(now + rng.randint(50_000, 2 * SECOND), self.out_of_stock, tenant, stock)

    def low_stock(self, now: int, tenant: Tenant, stock: Stock) -> None:
        if stock.on_hand >= stock.reorder_point:  # an adjustment lifted it in the meantime
            stock.low = False
            return
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "current_quantity": stock.on_hand,
            "reorder_point": stock.reorder_point,
            "reorder_quantity": stock.reorder_quantity,
        }
        self.emit(now, tenant, "inventory.low_stock", None, data, self.service_ctx(tenant))

    def out_of_stock(self, now: int, tenant: Tenant, stock: Stock) -> None:
        if stock.on_hand != 0 or stock.last_sold is None:
            return
        # The buyer reacts to a stock-out: reorder earlier and more next time.
        stock.reorder_point = min(500, stock.reorder_point + max(2, stock.reorder_point // 2))
        stock.reorder_quantity = min(5000, stock.reorder_quantity * 2)
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "last_sold_at": format_micros(stock.last_sold),
        }
        self.emit(now, tenant, "inventory.out_of_stock", None, data, self.service_ctx(tenant))

    def restock(self, now: int, tenant: Tenant, stock: Stock) -> None:
        staff = self.staff_member(tenant)
        stock.restock_pending = False
        if staff is None:
            return
        added = stock.reorder_quantity
        if self.rng.random() < 0.3:  # partial or generous deliveries happen
            added = max(1, round(added * self.rng.choice((0.5, 0.8, 1.2, 1.5))))
        stock.on_hand += added
        stock.low = False  # check_levels below raises a fresh alert if it is still low
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "quantity_added": added,
            "new_quantity": stock.on_hand,
            "restocked_by": staff.user_id,
            "supplier": product.supplier,
        }
        self.emit(
            now, tenant, "inventory.restocked", staff.user_id, data, self.user_ctx(staff, now)
        )
        self.check_levels(now, tenant, stock)

    def adjust_stock(self, now: int, tenant: Tenant) -> bool:
        rng = self.rng
        staff = self.staff_member(tenant)
        if staff is None:
            return False
        for _attempt in range(3):  # counts happen on shelves with goods on them, mostly
            product_index = rng.randrange(len(tenant.products))
            location_index = rng.randrange(len(tenant.locations))
            stock = tenant.stock[(product_index, location_index)]
            if stock.on_hand > 0:
                break
        kind, reason, low, high = rng.choice(ADJUSTMENTS)
        if stock.on_hand == 0:
            kind, reason, low, high = "return", "customer_return", 1, 2
        delta = rng.randint(low, high) or 1
        previous = stock.on_hand
        stock.on_hand = max(1, previous + delta) if previous > 0 else previous + max(1, delta)
        if stock.on_hand == previous:
            stock.on_hand += 1
        if stock.on_hand >= stock.reorder_point:
            stock.low = False
        data = {
            "inventory_id": stock.inventory_id,
            "product_id": stock.product.product_id,
            "location_id": stock.location.location_id,
            "adjustment_type": kind,
            "previous_quantity": previous,
            "new_quantity": stock.on_hand,
            "adjustment_reason": reason,
            "adjusted_by": staff.user_id,
        }
        self.emit(now, tenant, "inventory.adjusted", staff.user_id, data, self.user_ctx(staff, now))
        self.check_levels(now, tenant, stock)
        return True
