"""The order and payment events of a simulation: orders placed, paid, failed and retried."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from loadgen.catalog import FAILURES, GATEWAYS, HOUR, MINUTE, PAYMENT_METHODS, SECOND
from loadgen.fulfilment import FulfilmentEvents
from loadgen.people import PeopleEvents
from loadgen.seeds import EPOCH_NAIVE
from loadgen.state import Order, Stock, Tenant
from loadgen.stock import StockEvents


class OrderEvents(PeopleEvents, StockEvents, FulfilmentEvents):
    """Orders are created (drawing stock), then paid or failed and retried or abandoned."""

    def create_order(self, now: int, tenant: Tenant) -> bool:
        rng = self.rng
        customer = self.online_customer(now, tenant)
        if customer is None:
            return False
        location_index = (
            tenant.locations.index(customer.store)
            if rng.random() < 0.8
            else rng.randrange(len(tenant.locations))
        )
        location = tenant.locations[location_index]
        currency = location.currency
        lines = rng.choices((1, 2, 3, 4), weights=(45, 30, 15, 10))[0]
        picked = rng.choices(
            range(len(tenant.products)), cum_weights=tenant.product_cum_weights, k=lines
        )
        items: list[dict[str, Any]] = []
        sold: list[tuple[Stock, int]] = []
        subtotal = 0
        for product_index in dict.fromkeys(picked):  # distinct, in pick order
            stock = tenant.stock[(product_index, location_index)]
            if stock.on_hand <= 0:
                continue
            quantity = min(
                stock.on_hand, rng.choices((1, 2, 3, 4, 5), weights=(60, 24, 9, 4, 3))[0]
            )
            product = stock.product
            unit = product.prices[currency]
            line_total = unit * quantity
            subtotal += line_total
            items.append(
                {
                    "product_id": product.product_id,
                    "sku": product.sku,
                    "name": product.name,
                    "quantity": quantity,
                    "unit_price": self.money(unit),
                    "total_price": self.money(line_total),
                }
            )
            sold.append((stock, quantity))
        if not items:
            return False
        tax = (subtotal * location.tax_bp + 5000) // 10000
        shipping = (
            0 if subtotal >= location.free_shipping_cents else rng.choice(location.shipping_fees)
        )
        total = subtotal + tax + shipping
        tenant.order_seq += 1
        year = (EPOCH_NAIVE + timedelta(microseconds=now)).year
        ctx = self.user_ctx(customer, now)
        order = Order(
            order_id=self.uid(),
            order_number=f"ORD-{year}-{tenant.order_seq:05d}",
            tenant=tenant,
            customer=customer,
            currency=currency,
            total_cents=total,
            ctx=ctx,
        )
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "customer_id": customer.user_id,
            "location_id": location.location_id,
            "items_count": len(items),
            "subtotal": self.money(subtotal),
            "tax_amount": self.money(tax),
            "shipping_amount": self.money(shipping),
            "total_amount": self.money(total),
            "currency": currency,
            "items": items,
        }
        self.emit(now, tenant, "order.created", customer.user_id, data, ctx)
        for stock, quantity in sold:
            self.sell(now, tenant, stock, quantity)
        roll = rng.random()
        first_try = now + rng.randint(3 * SECOND, 40 * SECOND)
        if roll < 0.86:
            self.later(first_try, self.payment_processed, order)
        elif roll < 0.95:
            self.later(first_try, self.payment_failed, order, 1)
        elif rng.random() < 0.5:  # abandoned at checkout; some are cancelled later
            reason = rng.choice(("customer_request", "payment_timeout"))
            self.later(now + rng.randint(HOUR, 12 * HOUR), self.cancel, order, reason)
        return True

    def payment_processed(self, now: int, order: Order) -> None:
        rng = self.rng
        if order.status == "cancelled" or order.payment_id is not None:
            return
        customer = order.customer
        gateway = rng.choice(GATEWAYS)
        order.payment_id = self.uid()
        order.paid_cents = order.total_cents
        if gateway == "stripe":
            transaction = f"ch_{rng.getrandbits(96):024x}"
        elif gateway == "adyen":
            transaction = f"{rng.randrange(10**15, 10**16)}"
        else:
            transaction = f"{rng.getrandbits(32):08x}"
        data = {
            "payment_id": order.payment_id,
            "order_id": order.order_id,
            "amount": self.money(order.total_cents),
            "currency": order.currency,
            "payment_method": rng.choice(PAYMENT_METHODS),
            "gateway": gateway,
            "transaction_id": transaction,
            "card_last_four": customer.card_last_four,
            "card_brand": customer.card_brand,
        }
        self.emit(now, order.tenant, "payment.processed", customer.user_id, data, order.ctx)
        self.later(now + rng.randint(2 * MINUTE, 45 * MINUTE), self.set_status, order, "processing")
        if rng.random() < 0.05:
            reason = rng.choice(("customer_request",) * 6 + ("out_of_stock", "duplicate_order"))
            self.later(now + rng.randint(5 * MINUTE, 8 * HOUR), self.cancel, order, reason)

    def payment_failed(self, now: int, order: Order, retry_count: int) -> None:
        rng = self.rng
        if order.status == "cancelled" or order.payment_id is not None:
            return
        reason, code = rng.choice(FAILURES)
        data = {
            "payment_id": self.uid(),
            "order_id": order.order_id,
            "amount": self.money(order.total_cents),
            "currency": order.currency,
            "failure_reason": reason,
            "error_code": code,
            "retry_count": retry_count,
        }
        self.emit(now, order.tenant, "payment.failed", order.customer.user_id, data, order.ctx)
        roll = rng.random()
        retry_at = now + rng.randint(30 * SECOND, 15 * MINUTE)
        if reason == "fraud_suspected" or roll < 0.3:
            self.later(
                now + rng.randint(30 * MINUTE, 6 * HOUR), self.cancel, order, "payment_failed"
            )
        elif roll < (0.85 if retry_count == 1 else 0.6):
            self.later(retry_at, self.payment_processed, order)
        elif retry_count < 3:
            self.later(retry_at, self.payment_failed, order, retry_count + 1)
