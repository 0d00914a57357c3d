"""What happens to an order after payment: status changes, fulfilment, cancellation
and refunds.
"""

from __future__ import annotations

from datetime import timedelta

from loadgen.catalog import CARRIERS, DAY, HOUR, MINUTE, REFUND_REASONS
from loadgen.seeds import EPOCH_NAIVE
from loadgen.state import Order, User
from loadgen.world import WorldBase


class FulfilmentEvents(WorldBase):
    """Orders are processed, shipped, fulfilled or cancelled, and refunded."""

    def set_status(self, now: int, order: Order, status: str) -> None:
        rng = self.rng
        previous = {"processing": "pending", "shipped": "processing"}[status]
        if order.status != previous:
            return
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        order.status = status
        updated = rng.choice(
            (["status"], ["status"], ["status", "notes"], ["status", "shipping_address"])
        )
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "status": status,
            "previous_status": previous,
            "updated_fields": updated,
        }
        self.emit(
            now, order.tenant, "order.updated", staff.user_id, data, self.user_ctx(staff, now)
        )
        if status == "processing":
            self.later(now + rng.randint(HOUR, 16 * HOUR), self.set_status, order, "shipped")
        else:
            self.later(now + rng.randint(MINUTE, 30 * MINUTE), self.fulfil, order)

    def fulfil(self, now: int, order: Order) -> None:
        rng = self.rng
        if order.status != "shipped":
            return
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        order.status = "fulfilled"
        roll = rng.random()
        if roll < 0.85:
            method, carrier = "shipping", rng.choice(CARRIERS)
        elif roll < 0.95:
            method, carrier = "express", rng.choice(("UPS", "FedEx", "DHL"))
        else:
            method, carrier = "local_delivery", "Local Courier"
        if carrier == "UPS":
            tracking = f"1Z{rng.getrandbits(64):016X}"
        elif carrier == "USPS":
            tracking = f"9400{rng.randrange(10**17, 10**18)}"
        elif carrier == "Local Courier":
            tracking = f"LC{rng.randrange(10**9, 10**10)}"
        else:
            tracking = f"{rng.randrange(10**11, 10**12)}"
        transit_days = {"shipping": (2, 6), "express": (1, 2), "local_delivery": (0, 1)}[method]
        delivery = EPOCH_NAIVE + timedelta(microseconds=now, days=rng.randint(*transit_days))
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "fulfillment_method": method,
            "tracking_number": tracking,
            "carrier": carrier,
            "estimated_delivery": delivery.date().isoformat(),
        }
        self.emit(
            now, order.tenant, "order.fulfilled", staff.user_id, data, self.user_ctx(staff, now)
        )
        if rng.random() < 0.07:
            self.later(now + rng.randint(2 * HOUR, 3 * DAY), self.refund_after_delivery, order)

    def cancel(self, now: int, order: Order, reason: str) -> None:
        rng = self.rng
        if order.status not in ("pending", "processing"):
            return
        tenant = order.tenant
        by_customer = reason in ("customer_request", "duplicate_order")
        actor = order.customer if by_customer else self.staff_member(tenant)
        if actor is None:
            return
        order.status = "cancelled"
        refund = order.paid_cents - order.refunded_cents
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "cancellation_reason": reason,
            "cancelled_by": actor.user_id,
            "refund_amount": self.money(refund),
        }
        self.emit(now, tenant, "order.cancelled", actor.user_id, data, self.user_ctx(actor, now))
        if refund > 0:
            when = now + rng.randint(MINUTE, 30 * MINUTE)
            self.later(when, self.refund, order, refund, "order_cancelled", actor)

    def refund_after_delivery(self, now: int, order: Order) -> None:
        rng = self.rng
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        remaining = order.paid_cents - order.refunded_cents
        if rng.random() < 0.55:
            amount = max(1, min(remaining, round(order.paid_cents * rng.uniform(0.1, 0.8))))
        else:
            amount = remaining
        self.refund(now, order, amount, rng.choice(REFUND_REASONS), staff)

    def refund(self, now: int, order: Order, cents: int, reason: str, actor: User) -> None:
        remaining = order.paid_cents - order.refunded_cents
        cents = min(cents, remaining)
        if order.payment_id is None or cents <= 0:
            return
        order.refunded_cents += cents
        data = {
            "payment_id": order.payment_id,
            "order_id": order.order_id,
            "refund_amount": self.money(cents),
            "refund_reason": reason,
            "refund_type": "full" if cents == order.paid_cents else "partial",
            "refund_transaction_id": f"re_{self.rng.getrandbits(96):024x}",
        }
        self.emit(
            now, order.tenant, "payment.refunded", actor.user_id, data, self.user_ctx(actor, now)
        )
