"""The retail toolkit (16 tools), with τ²-bench retail semantics, over copy-on-write databases.

Every tool is ``fn(db, **arguments)`` on a :class:`~trace_envs.db.Database` with tables
``users``, ``orders`` and ``products``. Arguments were already checked against the
tool's JSON Schema. A failed precondition raises :class:`ToolError`; write tools check
*every* precondition before the first :meth:`Table.mut`, so an error leaves the
database unchanged. Records read with ``get`` are shared with other episodes and are
never mutated here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from trace_envs.db import Database, Table
from trace_envs.domains.retail.calculator import calculate as _calculate
from trace_envs.errors import ToolError
from trace_envs.world import Domain, Tool

CANCEL_REASONS = ("no longer needed", "ordered by mistake")

# -- indexes over shared base tables ----------------------------------------------------
# Lookups by email, by name+zip and by item id would otherwise scan a whole table per
# call (500 users, ~1000 variants), too slow for a hot path. Bases are shared read-only
# by every fork, so a value derived from a base once stays valid for all its forks; only
# records in a fork's overlay (``touched()`` ids, usually a handful) can differ from the
# base, and those are checked directly. Cache entries keep their base alive, so its id()
# cannot be reused by another object while cached; the cache is small, oldest evicted.
_BASE_CACHE: dict[tuple[int, str], tuple[dict, Any]] = {}
_BASE_CACHE_SIZE = 256


def _from_base(table: Table, kind: str, build: Callable[[dict], Any]) -> Any:
    """``build(base)`` for the table's shared base, computed once per base and kind."""
    base = table._base
    entry = _BASE_CACHE.get((id(base), kind))
    if entry is not None and entry[0] is base:
        return entry[1]
    value = build(base)
    if len(_BASE_CACHE) >= _BASE_CACHE_SIZE:
        del _BASE_CACHE[next(iter(_BASE_CACHE))]
    _BASE_CACHE[(id(base), kind)] = (base, value)
    return value


def _lookup(table: Table, kind: str, keys_of: Callable[[dict], Iterable[Hashable]], key: Hashable) -> str | None:
    """The first record id with ``key in keys_of(record)``, honouring the fork's overlay."""

    def build(base: dict) -> dict[Hashable, list[str]]:
        index: dict[Hashable, list[str]] = {}
        for rid, rec in base.items():
            for k in keys_of(rec):
                index.setdefault(k, []).append(rid)
        return index

    touched = table.touched()
    for rid in _from_base(table, kind, build).get(key, ()):
        if rid not in touched:
            return rid
        rec = table.get(rid)
        if rec is not None and key in keys_of(rec):
            return rid
    for rid in sorted(touched):  # records written or added in this fork
        rec = table.get(rid)
        if rec is not None and key in keys_of(rec):
            return rid
    return None


def _email_keys(user: dict) -> tuple[str]:
    return (user["email"].lower(),)


def _name_zip_keys(user: dict) -> tuple[tuple[str, str, str]]:
    name = user["name"]
    return ((name["first_name"].lower(), name["last_name"].lower(), user["address"]["zip"]),)


def _item_keys(product: dict) -> dict:
    return product["variants"]  # a dict: iterating and `in` both use the item ids


def _product_types(products: dict) -> dict[str, str]:
    return dict(sorted((p["name"], pid) for pid, p in products.items()))


# -- shared validation ----------------------------------------------------------------------
def _order(db: Database, order_id: str) -> dict:
    order = db.orders.get(order_id)
    if order is None:
        hint = "" if order_id.startswith("#") else " (order ids start with '#', e.g. '#W0000000')"
        raise ToolError(f"Error: order not found{hint}")
    return order


def _user(db: Database, user_id: str) -> dict:
    user = db.users.get(user_id)
    if user is None:
        raise ToolError("Error: user not found")
    return user


def _payment_method(db: Database, order: dict, payment_method_id: str) -> dict:
    """The order owner's payment method, or ToolError when the user has no such method."""
    user = db.users.get(order["user_id"])
    method = None if user is None else user["payment_methods"].get(payment_method_id)
    if method is None:
        raise ToolError("Error: payment method not found")
    return method


def _check_items_in_order(order: dict, item_ids: list[str]) -> None:
    if not item_ids:
        raise ToolError("Error: item_ids must not be empty")
    have = Counter(item["item_id"] for item in order["items"])
    for item_id, count in Counter(item_ids).items():
        if have[item_id] < count:
            raise ToolError(f"Error: item {item_id} not found in the order (or listed more often than ordered)")


def _price_difference(
    db: Database, order: dict, item_ids: list[str], new_item_ids: list[str]
) -> tuple[float, list[dict]]:
    """Check old/new item pairs; return (new total - old total, the new variants in order)."""
    if len(item_ids) != len(new_item_ids):
        raise ToolError("Error: the number of items to be exchanged should match")
    _check_items_in_order(order, item_ids)
    by_id = {item["item_id"]: item for item in order["items"]}
    diff = 0.0
    variants = []
    for old_id, new_id in zip(item_ids, new_item_ids, strict=True):
        if new_id == old_id:
            raise ToolError(f"Error: new item {new_id} is the same as the old item")
        old = by_id[old_id]
        product = db.products.get(old["product_id"])
        variant = None if product is None else product["variants"].get(new_id)
        if variant is None:
            raise ToolError(f"Error: new item {new_id} is not a variant of the same product as {old_id}")
        if not variant["available"]:
            raise ToolError(f"Error: new item {new_id} is not available")
        diff += variant["price"] - old["price"]
        variants.append(variant)
    return round(diff, 2), variants


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    return {"address1": address1, "address2": address2, "city": city, "country": country, "state": state, "zip": zip}


def _check_gift_card_covers(method: dict, amount: float) -> None:
    if method["source"] == "gift_card" and amount > 0 and method.get("balance", 0.0) < amount:
        raise ToolError("Error: insufficient gift card balance")


def _adjust_gift_card(db: Database, user_id: str, payment_method_id: str, delta: float) -> None:
    """Add ``delta`` to a gift card's balance (no-op for other methods)."""
    user = db.users.get(user_id)
    method = None if user is None else user["payment_methods"].get(payment_method_id)
    if method is None or method["source"] != "gift_card":
        return
    method = db.users.mut(user_id)["payment_methods"][payment_method_id]
    method["balance"] = round(method.get("balance", 0.0) + delta, 2)


# -- read tools ---------------------------------------------------------------------------
def find_user_id_by_email(db: Database, email: str) -> str:
    """The id of the user with this email (case-insensitive)."""
    user_id = _lookup(db.users, "email", _email_keys, email.lower())
    if user_id is None:
        raise ToolError("Error: user not found")
    return user_id


def find_user_id_by_name_zip(db: Database, first_name: str, last_name: str, zip: str) -> str:
    """The id of the user with this name (case-insensitive) and address zip code."""
    user_id = _lookup(db.users, "name_zip", _name_zip_keys, (first_name.lower(), last_name.lower(), zip))
    if user_id is None:
        raise ToolError("Error: user not found")
    return user_id


def get_user_details(db: Database, user_id: str) -> dict:
    """The user record."""
    return _user(db, user_id)


def get_order_details(db: Database, order_id: str) -> dict:
    """The order record."""
    return _order(db, order_id)


def get_product_details(db: Database, product_id: str) -> dict:
    """The product record with all its variants."""
    product = db.products.get(product_id)
    if product is None:
        raise ToolError("Error: product not found")
    return product


def get_item_details(db: Database, item_id: str) -> dict:
    """The variant record of one item id."""
    product_id = _lookup(db.products, "items", _item_keys, item_id)
    if product_id is None:
        raise ToolError("Error: item not found")
    return db.products[product_id]["variants"][item_id]


def list_all_product_types(db: Database) -> dict[str, str]:
    """Product name -> product id, sorted by name."""
    products = db.products
    if products.touched():
        return _product_types(products)
    return dict(_from_base(products, "types", _product_types))  # a copy: callers may mutate it


# -- generic tools --------------------------------------------------------------------------
def calculate(db: Database, expression: str) -> float:
    """Evaluate an arithmetic expression (digits, + - * / ( ) . and spaces)."""
    return _calculate(expression)


def transfer_to_human_agents(db: Database, summary: str) -> str:
    """Hand the conversation to a human agent."""
    return "Transfer successful"


# -- write tools ----------------------------------------------------------------------------
def cancel_pending_order(db: Database, order_id: str, reason: str) -> dict:
    """Cancel a pending order and refund every payment (gift cards at once)."""
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Error: non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Error: invalid reason")
    payments = [p for p in order["payment_history"] if p["transaction_type"] == "payment"]
    for p in payments:
        _adjust_gift_card(db, order["user_id"], p["payment_method_id"], p["amount"])
    order = db.orders.mut(order_id)
    order["payment_history"].extend(
        {"transaction_type": "refund", "amount": p["amount"], "payment_method_id": p["payment_method_id"]}
        for p in payments
    )
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    return order


def modify_pending_order_address(
    db: Database, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> dict:
    """Replace the shipping address of a pending order."""
    if "pending" not in _order(db, order_id)["status"]:
        raise ToolError("Error: non-pending order cannot be modified")
    order = db.orders.mut(order_id)
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


def _check_swap(
    db: Database,
    order_id: str,
    item_ids: list[str],
    new_item_ids: list[str],
    payment_method_id: str,
    status: str,
    verb: str,
) -> tuple[dict, float, list[dict]]:
    """Every precondition of swapping items for other variants: (order, price difference, new variants)."""
    order = _order(db, order_id)
    if order["status"] != status:
        raise ToolError(f"Error: non-{status} order cannot be {verb}")
    diff, variants = _price_difference(db, order, item_ids, new_item_ids)
    method = _payment_method(db, order, payment_method_id)
    _check_gift_card_covers(method, diff)
    return order, diff, variants


def modify_pending_order_items(
    db: Database, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> dict:
    """Swap items of a pending order for other variants, settling the price difference."""
    order, diff, variants = _check_swap(
        db, order_id, item_ids, new_item_ids, payment_method_id, status="pending", verb="modified"
    )
    _adjust_gift_card(db, order["user_id"], payment_method_id, -diff)
    order = db.orders.mut(order_id)
    order["payment_history"].append(
        {
            "transaction_type": "payment" if diff > 0 else "refund",
            "amount": abs(diff),
            "payment_method_id": payment_method_id,
        }
    )
    # Replace the first not-yet-replaced line holding each old id, so duplicates work.
    done: set[int] = set()
    items = order["items"]
    for old_id, variant in zip(item_ids, variants, strict=True):
        pos = next(i for i, it in enumerate(items) if i not in done and it["item_id"] == old_id)
        done.add(pos)
        items[pos].update(item_id=variant["item_id"], price=variant["price"], options=dict(variant["options"]))
    order["status"] = "pending (item modified)"
    return order


def modify_pending_order_payment(db: Database, order_id: str, payment_method_id: str) -> dict:
    """Move the single payment of a pending order to another of the user's methods."""
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Error: non-pending order cannot be modified")
    method = _payment_method(db, order, payment_method_id)
    history = order["payment_history"]
    if len(history) != 1 or history[0]["transaction_type"] != "payment":
        raise ToolError("Error: there should be exactly one payment for a pending order")
    old_id, amount = history[0]["payment_method_id"], history[0]["amount"]
    if old_id == payment_method_id:
        raise ToolError("Error: the new payment method should be different from the current one")
    _check_gift_card_covers(method, amount)
    _adjust_gift_card(db, order["user_id"], payment_method_id, -amount)
    _adjust_gift_card(db, order["user_id"], old_id, amount)
    order = db.orders.mut(order_id)
    order["payment_history"].extend(
        [
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id},
        ]
    )
    return order


def modify_user_address(
    db: Database, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> dict:
    """Replace a user's default address."""
    _user(db, user_id)
    user = db.users.mut(user_id)
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


def return_delivered_order_items(db: Database, order_id: str, item_ids: list[str], payment_method_id: str) -> dict:
    """Request a return of items of a delivered order."""
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Error: non-delivered order cannot be returned")
    method = _payment_method(db, order, payment_method_id)
    original = order["payment_history"][0]["payment_method_id"] if order["payment_history"] else None
    if payment_method_id != original and method["source"] != "gift_card":
        raise ToolError("Error: payment method should be either the original payment method or a gift card")
    _check_items_in_order(order, item_ids)
    order = db.orders.mut(order_id)
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return order


def exchange_delivered_order_items(
    db: Database, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> dict:
    """Request an exchange of items of a delivered order for other variants."""
    order, diff, _ = _check_swap(
        db, order_id, item_ids, new_item_ids, payment_method_id, status="delivered", verb="exchanged"
    )
    order = db.orders.mut(order_id)
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return order


# -- schemas ------------------------------------------------------------------------------
def _s(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


def _ids(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def _params(**props: dict) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_ORDER_ID = _s("The order id, including the leading '#', e.g. '#W0000000'.")
_USER_ID = _s("The user id, e.g. 'jane_doe_1234'.")
_PAYMENT_ID = _s("A payment method id of the order's user, e.g. 'credit_card_0000000' or 'gift_card_0000000'.")
_ADDRESS = {
    "address1": _s("First address line, e.g. '123 Main Street'."),
    "address2": _s("Second address line, e.g. 'Apt 1'; an empty string if none."),
    "city": _s("City."),
    "state": _s("State, e.g. 'CA'."),
    "country": _s("Country, e.g. 'USA'."),
    "zip": _s("Zip code, e.g. '12345'."),
}
_NEW_ITEMS = _ids(
    "New item ids, one per old item in the same position; each must be an available variant of "
    "the same product as its old item, and differ from it."
)


def _old_items(verb: str) -> dict[str, Any]:
    return _ids(f"Item ids in the order to {verb}; repeat an id to {verb} several units of it.")


_CONFIRM = "Requires the user's explicit confirmation first."
_SPECS: list[tuple[str, str, str, dict[str, Any], Callable[..., Any]]] = [
    (
        "find_user_id_by_email",
        "read",
        "Find a user's id by their email address. Returns the user id, or an error if no user has that email.",
        _params(email=_s("The user's email, e.g. 'jane.doe1234@example.com'.")),
        find_user_id_by_email,
    ),
    (
        "find_user_id_by_name_zip",
        "read",
        "Find a user's id by first name, last name and the zip code of their address, when the user does not "
        "know their email. Returns the user id, or an error if no user matches.",
        _params(
            first_name=_s("First name, e.g. 'Jane'."),
            last_name=_s("Last name, e.g. 'Doe'."),
            zip=_s("Zip code, e.g. '12345'."),
        ),
        find_user_id_by_name_zip,
    ),
    (
        "get_user_details",
        "read",
        "Get a user's profile: name, default address, email, payment methods (gift cards show their balance) "
        "and the ids of their orders.",
        _params(user_id=_USER_ID),
        get_user_details,
    ),
    (
        "get_order_details",
        "read",
        "Get an order: its user id, shipping address, items (item id, product id, price, options), status, "
        "fulfillments and payment history. Order ids start with '#'.",
        _params(order_id=_ORDER_ID),
        get_order_details,
    ),
    (
        "get_product_details",
        "read",
        "Get a product and all its variants (item id, options, availability, price). Takes a product id, not "
        "an item id; the two are unrelated.",
        _params(product_id=_s("The 10-digit product id, e.g. '1234567890'.")),
        get_product_details,
    ),
    (
        "get_item_details",
        "read",
        "Get one variant by its item id: its options, availability and price.",
        _params(item_id=_s("The 10-digit item id, e.g. '1234567890'.")),
        get_item_details,
    ),
    (
        "list_all_product_types",
        "read",
        "List every product type in the store as a mapping from product name to product id, sorted by name.",
        _params(),
        list_all_product_types,
    ),
    (
        "calculate",
        "generic",
        "Evaluate an arithmetic expression and return the result rounded to 2 decimals. Only digits, '+', '-', "
        "'*', '/', parentheses, '.' and spaces are allowed (no '**', no names).",
        _params(expression=_s("The expression, e.g. '(25.5 + 12) * 2 / 3'.")),
        calculate,
    ),
    (
        "transfer_to_human_agents",
        "terminal",
        "Transfer the user to a human agent, ending this conversation. Use it only when the request cannot be "
        "handled within the policy and the available tools.",
        _params(summary=_s("A short summary of the user's issue for the human agent.")),
        transfer_to_human_agents,
    ),
    (
        "cancel_pending_order",
        "write",
        "Cancel an order whose status is exactly 'pending'. The reason must be exactly 'no longer needed' or "
        "'ordered by mistake'. Every payment is refunded; gift card refunds are credited at once, others within "
        f"5-7 business days. {_CONFIRM}",
        _params(order_id=_ORDER_ID, reason=_s("Exactly 'no longer needed' or 'ordered by mistake'.")),
        cancel_pending_order,
    ),
    (
        "modify_pending_order_address",
        "write",
        f"Change the shipping address of an order whose status contains 'pending'. {_CONFIRM}",
        _params(order_id=_ORDER_ID, **_ADDRESS),
        modify_pending_order_address,
    ),
    (
        "modify_pending_order_items",
        "write",
        "Replace items of an order whose status is exactly 'pending' with other available variants of the same "
        "products. This can be done only once per order, so collect all changes first. The price difference is "
        "charged or refunded to the given payment method of the user; a gift card must have enough balance to "
        f"cover a charge. {_CONFIRM}",
        _params(
            order_id=_ORDER_ID, item_ids=_old_items("replace"), new_item_ids=_NEW_ITEMS, payment_method_id=_PAYMENT_ID
        ),
        modify_pending_order_items,
    ),
    (
        "modify_pending_order_payment",
        "write",
        "Pay a pending order (status contains 'pending') with another payment method of the user. The order "
        "must have exactly one payment so far; the new method must differ from it, and a gift card must have "
        f"enough balance for the full amount. {_CONFIRM}",
        _params(order_id=_ORDER_ID, payment_method_id=_PAYMENT_ID),
        modify_pending_order_payment,
    ),
    (
        "modify_user_address",
        "write",
        f"Change a user's default address (existing orders keep theirs). {_CONFIRM}",
        _params(user_id=_USER_ID, **_ADDRESS),
        modify_user_address,
    ),
    (
        "return_delivered_order_items",
        "write",
        "Request a return of items of an order whose status is 'delivered'. The refund goes to the order's "
        f"original payment method or to a gift card of the user. {_CONFIRM}",
        _params(
            order_id=_ORDER_ID,
            item_ids=_old_items("return"),
            payment_method_id=_s("The order's original payment method id, or a gift card id of the user."),
        ),
        return_delivered_order_items,
    ),
    (
        "exchange_delivered_order_items",
        "write",
        "Request an exchange of items of an order whose status is 'delivered' for other available variants of "
        "the same products; collect all items to exchange first. The price difference is settled with the "
        f"given payment method of the user; a gift card must cover a positive difference. {_CONFIRM}",
        _params(
            order_id=_ORDER_ID, item_ids=_old_items("exchange"), new_item_ids=_NEW_ITEMS, payment_method_id=_PAYMENT_ID
        ),
        exchange_delivered_order_items,
    ),
]

RETAIL_TOOLS: dict[str, Tool] = {
    name: Tool(name=name, kind=kind, description=desc, parameters=params, fn=fn)  # type: ignore[arg-type]
    for name, kind, desc, params, fn in _SPECS
}

RETAIL_POLICY = """\
# Retail support policy

You are a customer-support agent of an online store. You can cancel or modify pending orders,
return or exchange delivered orders, update a user's default address, and answer questions
about the user's own profile, orders and the store's products.

- **Authenticate first.** Find the user id by email, or by first name + last name + zip code,
  even if the user states their user id. Do nothing else before that.
- **One user only.** Help only the authenticated user; refuse requests about other users' accounts or orders.
- **Confirm every write.** Before cancelling, modifying, returning or exchanging, list the exact
  details of the action and wait for an explicit "yes" from the user.
- **Cancel** only orders with status `pending`, and only with the reason exactly
  `no longer needed` or `ordered by mistake`.
- **Modify** (address, payment, items) only pending orders. Items can be modified only once per
  order, so collect every change before calling the tool.
- **Return or exchange** only delivered orders. Refunds go to the original payment method or a gift card.
- New items in a modification or exchange must be **available variants of the same product**.
- Use only facts from the user and the tools; do not invent information or procedures.
- Make at most one tool call at a time, and do not message the user in the same turn as a tool call.
- When you refuse a request, explain which rule prevents it.
- Transfer to a human agent only if the request cannot be handled within this policy and these tools.
"""


def make_retail_domain() -> Domain:
    """The retail domain: its 15 tools and the agent policy."""
    return Domain(name="retail", tools=RETAIL_TOOLS, policy=RETAIL_POLICY)
