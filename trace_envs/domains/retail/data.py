"""Seeded synthetic retail databases, in the τ²-bench retail layout.

Resets must be cheap (thousands per second), so the product catalog, the biggest table,
is generated once per *catalog index* and shared read-only by every episode that draws
it (see :mod:`trace_envs.db`: tools copy a record before writing it). Users and orders
are generated per episode by :class:`RetailBuilder`, which task families drive so that
every scenario gets exactly the records it needs plus distractors.
"""

from __future__ import annotations

import functools
import itertools
from random import Random
from typing import Any

# Product types with their option dimensions. Variants are drawn from the option grid.
PRODUCT_TYPES: dict[str, dict[str, list[str]]] = {
    "T-Shirt": {
        "color": ["blue", "black", "red", "white"],
        "size": ["S", "M", "L", "XL"],
        "material": ["cotton", "polyester"],
    },
    "Water Bottle": {
        "capacity": ["500ml", "750ml", "1000ml"],
        "material": ["glass", "steel", "plastic"],
        "color": ["blue", "green", "black"],
    },
    "Office Chair": {
        "material": ["fabric", "leather", "mesh"],
        "color": ["black", "gray", "blue"],
        "armrest": ["fixed", "adjustable"],
    },
    "Mechanical Keyboard": {
        "switch type": ["linear", "tactile", "clicky"],
        "backlight": ["none", "white", "RGB"],
        "size": ["full size", "TKL", "60%"],
    },
    "Headphones": {
        "type": ["over-ear", "on-ear", "in-ear"],
        "connectivity": ["wired", "wireless"],
        "color": ["black", "white", "red"],
    },
    "Running Shoes": {
        "size": ["8", "9", "10", "11"],
        "color": ["black", "white", "yellow"],
        "material": ["mesh", "synthetic"],
    },
    "Backpack": {
        "color": ["black", "green", "navy"],
        "size": ["small", "medium", "large"],
        "compartment": ["laptop", "hydration", "camera"],
    },
    "Desk Lamp": {
        "color": ["black", "silver", "white"],
        "brightness": ["low", "medium", "high"],
        "power source": ["USB", "AC adapter", "battery"],
    },
    "Smart Watch": {
        "color": ["black", "silver", "gold"],
        "band material": ["silicone", "leather", "metal"],
        "display": ["LCD", "AMOLED"],
    },
    "Coffee Maker": {
        "color": ["black", "stainless steel"],
        "capacity": ["1 cup", "4 cups", "8 cups"],
        "type": ["drip", "espresso", "french press"],
    },
    "Yoga Mat": {
        "thickness": ["4mm", "6mm", "8mm"],
        "material": ["PVC", "TPE", "natural rubber"],
        "color": ["green", "pink", "blue"],
    },
    "Bluetooth Speaker": {
        "color": ["black", "blue", "red"],
        "battery life": ["10 hours", "20 hours"],
        "water resistance": ["yes", "no"],
    },
}
PRICE_RANGE: dict[str, tuple[float, float]] = {
    "T-Shirt": (40, 60),
    "Water Bottle": (15, 60),
    "Office Chair": (300, 550),
    "Mechanical Keyboard": (120, 280),
    "Headphones": (60, 380),
    "Running Shoes": (90, 190),
    "Backpack": (60, 220),
    "Desk Lamp": (30, 160),
    "Smart Watch": (180, 420),
    "Coffee Maker": (40, 300),
    "Yoga Mat": (20, 120),
    "Bluetooth Speaker": (40, 300),
}

FIRST_NAMES = [
    "Ava",
    "Noah",
    "Mia",
    "Liam",
    "Sofia",
    "Omar",
    "Yusuf",
    "Lucas",
    "Emma",
    "Ivan",
    "Chen",
    "Aarav",
    "Fatima",
    "Mei",
    "Lena",
    "Raj",
    "Sara",
    "Ethan",
    "Olivia",
    "Mason",
    "Amara",
    "Harper",
    "Daiki",
    "Isabella",
    "Mohamed",
    "Anya",
    "Juan",
    "Zoe",
    "Kai",
    "Nora",
]
LAST_NAMES = [
    "Brown",
    "Garcia",
    "Khan",
    "Rossi",
    "Kim",
    "Silva",
    "Nguyen",
    "Muller",
    "Lopez",
    "Smith",
    "Patel",
    "Ito",
    "Moreau",
    "Novak",
    "Cohen",
    "Hughes",
    "Santos",
    "Ali",
    "Wilson",
    "Lee",
    "Anderson",
    "Martin",
    "Sato",
    "Jensen",
    "Costa",
    "Ahmed",
]
STREETS = [
    "Oak Street",
    "Maple Avenue",
    "Sunset Drive",
    "River Road",
    "Hillcrest Lane",
    "Elm Street",
    "Lakeview Drive",
    "Park Avenue",
    "Cedar Lane",
    "Main Street",
    "Highland Avenue",
    "Willow Lane",
    "Pine Street",
    "Broadway",
    "Chestnut Street",
]
CITIES = [
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Seattle", "WA", "981"),
    ("Boston", "MA", "021"),
    ("Chicago", "IL", "606"),
    ("Phoenix", "AZ", "850"),
    ("Portland", "OR", "972"),
    ("Columbus", "OH", "432"),
    ("Charlotte", "NC", "282"),
    ("San Diego", "CA", "921"),
    ("New York", "NY", "100"),
    ("Philadelphia", "PA", "191"),
]
CARD_BRANDS = ["visa", "mastercard", "amex"]

# The order statuses of the τ²-bench retail world.
STATUSES = ("pending", "processed", "delivered", "cancelled")

CATALOG_POOL_SIZE = 64


def _digits(rng: Random, n: int) -> str:
    return str(rng.randrange(10 ** (n - 1), 10**n))


@functools.lru_cache(maxsize=CATALOG_POOL_SIZE)
def catalog(index: int, variants_per_product: int = 8) -> dict[str, dict[str, Any]]:
    """Product table number ``index`` of the pool: shared, read-only, cached per process."""
    rng = Random(f"catalog-{index}-{variants_per_product}")
    products: dict[str, dict[str, Any]] = {}
    for name, dims in PRODUCT_TYPES.items():
        pid = _digits(rng, 10)
        grid = list(itertools.product(*dims.values()))
        rng.shuffle(grid)
        lo, hi = PRICE_RANGE[name]
        variants: dict[str, dict[str, Any]] = {}
        for values in grid[:variants_per_product]:
            item_id = _digits(rng, 10)
            variants[item_id] = {
                "item_id": item_id,
                "options": dict(zip(dims, values, strict=True)),
                "available": rng.random() > 0.2,
                "price": round(rng.uniform(lo, hi), 2),
            }
        products[pid] = {"name": name, "product_id": pid, "variants": variants}
    return products


class RetailBuilder:
    """Builds the users and orders of one episode on top of a shared catalog."""

    def __init__(self, rng: Random, catalog_index: int | None = None, variants_per_product: int = 8):
        self.rng = rng
        index = rng.randrange(CATALOG_POOL_SIZE) if catalog_index is None else catalog_index
        self.products = catalog(index, variants_per_product)
        self.product_ids = list(self.products)
        self.users: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}

    # -- users ------------------------------------------------------------------------
    def address(self) -> dict[str, str]:
        """A random US address."""
        rng = self.rng
        city, state, zip3 = rng.choice(CITIES)
        return {
            "address1": f"{rng.randrange(10, 999)} {rng.choice(STREETS)}",
            "address2": f"Suite {rng.randrange(100, 999)}" if rng.random() < 0.5 else "",
            "city": city,
            "country": "USA",
            "state": state,
            "zip": zip3 + _digits(self.rng, 2),
        }

    def user(
        self,
        first_name: str | None = None,
        last_name: str | None = None,
        sources: tuple[str, ...] = ("credit_card", "gift_card"),
    ) -> dict[str, Any]:
        """Add a user with one payment method per source; gift cards carry a balance."""
        rng = self.rng
        first = first_name or rng.choice(FIRST_NAMES)
        last = last_name or rng.choice(LAST_NAMES)
        while True:
            user_id = f"{first.lower()}_{last.lower()}_{rng.randrange(1000, 9999)}"
            if user_id not in self.users:
                break
        methods: dict[str, dict[str, Any]] = {}
        for source in sources:
            pm_id = f"{source}_{_digits(rng, 7)}"
            pm: dict[str, Any] = {"source": source, "id": pm_id}
            if source == "credit_card":
                pm.update(brand=rng.choice(CARD_BRANDS), last_four=_digits(rng, 4))
            elif source == "gift_card":
                pm["balance"] = float(rng.randrange(0, 300))
            methods[pm_id] = pm
        record = {
            "user_id": user_id,
            "name": {"first_name": first, "last_name": last},
            "address": self.address(),
            "email": f"{first.lower()}.{last.lower()}{rng.randrange(1000, 9999)}@example.com",
            "payment_methods": methods,
            "orders": [],
        }
        self.users[user_id] = record
        return record

    # -- orders -----------------------------------------------------------------------
    def variant(self, product_id: str | None = None, available: bool | None = None) -> tuple[str, dict]:
        """A random (product_id, variant) pair, optionally constrained on availability."""
        rng = self.rng
        pids = [product_id] if product_id else self.product_ids
        for _ in range(100):
            pid = rng.choice(pids)
            variant = rng.choice(list(self.products[pid]["variants"].values()))
            if available is None or variant["available"] == available:
                return pid, variant
        raise ValueError(f"no variant with available={available} in product {product_id}")

    def line_item(self, product_id: str, variant: dict[str, Any]) -> dict[str, Any]:
        """An order line for one unit of ``variant``."""
        return {
            "name": self.products[product_id]["name"],
            "product_id": product_id,
            "item_id": variant["item_id"],
            "price": variant["price"],
            "options": dict(variant["options"]),
        }

    def order(
        self,
        user: dict[str, Any],
        status: str,
        items: list[dict[str, Any]] | None = None,
        n_items: int = 2,
        payment_method_id: str | None = None,
    ) -> dict[str, Any]:
        """Add an order of ``user`` with the given status (random distinct products when no items)."""
        rng = self.rng
        if items is None:
            pids = rng.sample(self.product_ids, n_items)
            items = [self.line_item(pid, self.variant(pid)[1]) for pid in pids]
        while True:
            order_id = "#W" + _digits(rng, 7)
            if order_id not in self.orders:
                break
        pm_id = payment_method_id or rng.choice(
            [k for k, v in user["payment_methods"].items() if v["source"] != "gift_card"]
            or list(user["payment_methods"])
        )
        total = round(sum(it["price"] for it in items), 2)
        history = [{"transaction_type": "payment", "amount": total, "payment_method_id": pm_id}]
        fulfillments: list[dict[str, Any]] = []
        if status in ("processed", "delivered"):
            fulfillments.append({"tracking_id": [_digits(rng, 12)], "item_ids": [it["item_id"] for it in items]})
        if status == "cancelled":
            history.append({"transaction_type": "refund", "amount": total, "payment_method_id": pm_id})
        record: dict[str, Any] = {
            "order_id": order_id,
            "user_id": user["user_id"],
            "address": dict(user["address"]),
            "items": items,
            "status": status,
            "fulfillments": fulfillments,
            "payment_history": history,
        }
        if status == "cancelled":
            record["cancel_reason"] = rng.choice(["no longer needed", "ordered by mistake"])
        self.orders[order_id] = record
        user["orders"].append(order_id)
        return record

    def tables(self) -> dict[str, dict[str, Any]]:
        """The three tables of the episode's initial database."""
        return {"products": self.products, "users": self.users, "orders": self.orders}
