"""Request kinds shared by the task families.

Each function adds the records a request needs to a :class:`RetailBuilder` and returns a
:class:`Request`. ``allowed=False`` builds the same request in a state where policy
forbids it, so families can set a refuse rate. ``precise=True`` words the request the way
users do ("order W1234567", "I don't need it any more", several items at once), so the
agent must translate it into exact arguments; ``pick="cheapest"`` makes the agent choose
a record under constraints from JSON tool results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from random import Random
from typing import Any

from trace_envs.domains.retail.data import RetailBuilder
from trace_envs.tasks.base import Call, Request

PRE = "precondition_verification"
DATA = "structured_data_reasoning"
TOOLS = "tool_calling_precision"

REASONS = {
    "no longer needed": ["I no longer need it", "I don't need it any more", "turns out I won't use it"],
    "ordered by mistake": ["I ordered it by mistake", "I placed it by accident", "it was a mistaken order"],
}


@dataclass
class Ctx:
    """What a request generator needs: the rng, the builder, the user and the knobs."""

    rng: Random
    b: RetailBuilder
    user: dict[str, Any]
    noise: float = 0.0  # chance of a paraphrased wording
    precise: bool = False  # word values loosely so exact arguments must be derived

    def say(self, *templates: str) -> str:
        """The first template, or with probability ``noise`` another one."""
        if len(templates) > 1 and self.rng.random() < self.noise:
            return self.rng.choice(templates[1:])
        return templates[0]

    def order_ref(self, order_id: str) -> str:
        """How the user names an order: exact, or without its '#' when precise."""
        return order_id[1:] if self.precise else order_id

    def other_user(self) -> dict[str, Any]:
        """A distractor user, for requests about someone else's order."""
        return self.b.user()

    def pay_method(self, kind: str) -> str:
        """The user's payment method id of a source kind."""
        return next(k for k, v in self.user["payment_methods"].items() if v["source"] == kind)


def _order_read(order_id: str) -> Call:
    return Call("get_order_details", {"order_id": order_id})


def _product_read(product_id: str) -> Call:
    return Call("get_product_details", {"product_id": product_id})


def _strip_hash(call: Call) -> Call:
    args = dict(call.arguments)
    args["order_id"] = args["order_id"].lstrip("#")
    return Call(call.name, args)


def cancel(c: Ctx, allowed: bool) -> Request:
    """Cancel a pending order; refused when the order is not pending or not the user's."""
    rng = c.rng
    owner = c.user
    status = "pending"
    why = ""
    if not allowed:
        if rng.random() < 0.5:
            status = rng.choice(["processed", "delivered", "cancelled"])
            why = f"it is {status}, and only pending orders can be cancelled"
        else:
            owner = c.other_user()
            why = "it does not belong to your account"
    order = c.b.order(owner, status)
    oid = order["order_id"]
    reason = rng.choice(list(REASONS))
    phrase = rng.choice(REASONS[reason]) if c.precise else f"the reason is: {reason}"
    desired = Call("cancel_pending_order", {"order_id": oid, "reason": reason})
    wrong = Call(desired.name, {"order_id": oid, "reason": phrase})
    return Request(
        kind="cancel",
        text=c.say(
            f"I want to cancel my order {c.order_ref(oid)}; {phrase}.",
            f"Please cancel order {c.order_ref(oid)} for me, {phrase}.",
            f"Can you cancel {c.order_ref(oid)}? {phrase.capitalize()}.",
        ),
        capabilities=(PRE, TOOLS) if c.precise and allowed else (PRE,),
        desired=desired,
        refuse=not allowed,
        refusal_reason=why,
        required_reads=(_order_read(oid),),
        target=oid,
        facts={"order_id": oid, "reason": reason},
        wrong_format=_strip_hash(desired) if c.precise and rng.random() < 0.5 else wrong,
        describe=f"cancel order {oid} with reason '{reason}'",
    )


def modify_address(c: Ctx, allowed: bool) -> Request:
    """Change a pending order's shipping address; refused once it has shipped."""
    status = "pending" if allowed else c.rng.choice(["processed", "delivered"])
    order = c.b.order(c.user, status)
    oid = order["order_id"]
    addr = c.b.address()
    args = {"order_id": oid, **addr}
    desired = Call("modify_pending_order_address", args)
    line = ", ".join(
        v for v in (addr["address1"], addr["address2"], addr["city"], addr["state"], addr["zip"], addr["country"]) if v
    )
    bad = dict(args)
    bad["zip"] = int(addr["zip"])  # a number where the schema wants a string
    return Request(
        kind="modify_address",
        text=c.say(
            f"Please ship my order {c.order_ref(oid)} to {line} instead.",
            f"I moved. Could order {c.order_ref(oid)} go to {line}?",
        ),
        capabilities=(PRE, TOOLS) if c.precise and allowed else (PRE,),
        desired=desired,
        refuse=not allowed,
        refusal_reason=f"it is {status}, and only pending orders can change address",
        required_reads=(_order_read(oid),),
        target=oid,
        facts={"order_id": oid, "address": line},
        wrong_format=Call(desired.name, bad),
        describe=f"change the shipping address of order {oid} to {line}",
    )


def update_user_address(c: Ctx, allowed: bool = True) -> Request:
    """Change the user's default address (always allowed once authenticated)."""
    addr = c.b.address()
    uid = c.user["user_id"]
    desired = Call("modify_user_address", {"user_id": uid, **addr})
    line = ", ".join(
        v for v in (addr["address1"], addr["address2"], addr["city"], addr["state"], addr["zip"], addr["country"]) if v
    )
    bad = {"user_id": uid, **addr, "zip": int(addr["zip"])}
    return Request(
        kind="update_user_address",
        text=c.say(
            f"Please update my default address to {line}.", f"My new home address is {line}; can you update my profile?"
        ),
        capabilities=(TOOLS,) if c.precise else (),
        desired=desired,
        target=uid,
        facts={"address": line},
        required_reads=(Call("get_user_details", {"user_id": uid}),),
        wrong_format=Call(desired.name, bad),
        describe=f"update your default address to {line}",
    )


def _variant_choice(c: Ctx, pid: str, current: str, pick: str, allowed: bool) -> tuple[dict, str, dict | None]:
    """Choose the new variant: (variant, how the user describes it, plausible wrong one)."""
    variants = [v for v in c.b.products[pid]["variants"].values() if v["item_id"] != current]
    mine = next((v for v in c.b.products[pid]["variants"].values() if v["item_id"] == current), None)
    name = c.b.products[pid]["name"]
    if pick == "cheapest":
        # "the cheapest available one with <option> = <value>": traps are cheaper variants
        # that are unavailable or lack the option.
        for _ in range(30):
            opt, val = c.rng.choice(list(c.rng.choice(variants)["options"].items()))
            ok = [v for v in variants if v["options"][opt] == val and v["available"]]
            if ok:
                best = min(ok, key=lambda v: (v["price"], v["item_id"]))
                if (
                    mine is not None
                    and mine["available"]
                    and mine["options"].get(opt) == val
                    and (mine["price"], mine["item_id"]) <= (best["price"], best["item_id"])
                ):
                    continue  # the item the user has is itself the cheapest such one: ambiguous
                traps = [v for v in variants if v["price"] < best["price"]]
                wrong = (
                    min(traps, key=lambda v: v["price"])
                    if traps
                    else (sorted(ok, key=lambda v: v["price"])[1] if len(ok) > 1 else None)
                )
                if wrong is not None:
                    return best, f"the cheapest available {name} with {opt} {val}", wrong
        pick = "options"  # no informative constraint in this catalog: name it exactly
    pool = [v for v in variants if v["available"] == allowed] or variants
    target = c.rng.choice(pool)
    opts = ", ".join(f"{k} {v}" for k, v in target["options"].items())
    others = [v for v in variants if v is not target]
    return target, f"the {name} with {opts}", (c.rng.choice(others) if others else None)


def swap_items(c: Ctx, allowed: bool, delivered: bool, pick: str = "options") -> Request:
    """Exchange (delivered) or modify (pending) one item for another variant of its product.

    Refused when the order has the wrong status or the wanted variant is unavailable.
    """
    rng = c.rng
    want_status = "delivered" if delivered else "pending"
    unavailable = not allowed and pick == "options" and rng.random() < 0.5
    status = (
        want_status
        if (allowed or unavailable)
        else (rng.choice(["pending", "processed"]) if delivered else rng.choice(["processed", "delivered"]))
    )
    order = c.b.order(c.user, status, n_items=rng.randint(2, 3))
    item = rng.choice(order["items"])
    pid = item["product_id"]
    new, phrase, wrong = _variant_choice(c, pid, item["item_id"], pick, allowed=not unavailable)
    if unavailable and new["available"]:
        unavailable = False  # this product has no unavailable variant: refuse on status instead
        status = rng.choice(["pending", "processed"]) if delivered else "processed"
        order["status"] = status
    pm = order["payment_history"][0]["payment_method_id"]
    tool = "exchange_delivered_order_items" if delivered else "modify_pending_order_items"
    args = {
        "order_id": order["order_id"],
        "item_ids": [item["item_id"]],
        "new_item_ids": [new["item_id"]],
        "payment_method_id": pm,
    }
    desired = Call(tool, args)
    oid = order["order_id"]
    verb = "exchange" if delivered else "change"
    why = (
        f"the variant {new['item_id']} is not available"
        if unavailable
        else f"the order is {status}; only {want_status} orders can be {'exchanged' if delivered else 'modified'}"
    )
    wrong_call = Call(tool, {**args, "new_item_ids": [wrong["item_id"]]}) if wrong else None
    return Request(
        kind="exchange" if delivered else "modify_items",
        text=c.say(
            f"I'd like to {verb} the {item['name']} in order {c.order_ref(oid)} for {phrase}. "
            f"Use the original payment method for any difference.",
            f"In order {c.order_ref(oid)}, can I {verb} my {item['name']} for {phrase}? "
            f"Any price difference can go on the original payment method.",
        ),
        capabilities=(PRE, DATA) if pick == "cheapest" else (PRE,),
        desired=desired,
        refuse=not allowed,
        refusal_reason=why,
        # Per outcome: a wrong status alone decides a refusal; a swap needs the variant's record.
        required_reads=(_order_read(oid),) + (() if status != want_status else (_product_read(pid),)),
        target=oid,
        facts={"order_id": oid, "payment_method_id": pm},
        wrong_record=wrong_call,
        wrong_format=Call(tool, {**args, "item_ids": item["item_id"]}),  # a string, not a list
        describe=(
            f"{verb} item {item['item_id']} ({item['name']}) in order {oid} for item {new['item_id']} "
            f"({', '.join(f'{k} {v}' for k, v in new['options'].items())}), settling any difference "
            f"with {pm}"
        ),
    )


def return_items(c: Ctx, allowed: bool, pick: str = "named") -> Request:
    """Return items of a delivered order; refused before delivery.

    ``pick="priciest"`` asks for the most expensive item, which the agent must find.
    """
    rng = c.rng
    status = "delivered" if allowed else rng.choice(["pending", "processed"])
    order = c.b.order(c.user, status, n_items=rng.randint(2, 4))
    oid = order["order_id"]
    items = order["items"]
    to_gift = rng.random() < 0.5
    pm = c.pay_method("gift_card") if to_gift else order["payment_history"][0]["payment_method_id"]
    where = "my gift card" if to_gift else "the original payment method"
    wrong: Call | None = None
    if pick == "priciest":
        ranked = sorted(items, key=lambda it: (-it["price"], it["item_id"]))
        chosen = [ranked[0]]
        what = "the most expensive item"
        wrong_ids = [ranked[1]["item_id"]]
        wrong = Call("return_delivered_order_items", {"order_id": oid, "item_ids": wrong_ids, "payment_method_id": pm})
    else:
        k = rng.randint(2, len(items)) if c.precise else 1
        chosen = rng.sample(items, k)
        what = " and the ".join(it["name"] for it in chosen)
        what = "the " + what
    ids = sorted(it["item_id"] for it in chosen)
    desired = Call("return_delivered_order_items", {"order_id": oid, "item_ids": ids, "payment_method_id": pm})
    caps = (PRE,) + ((DATA,) if pick == "priciest" else ()) + ((TOOLS,) if c.precise and allowed else ())
    return Request(
        kind="return",
        text=c.say(
            f"I want to return {what} from order {c.order_ref(oid)}, refunded to {where}.",
            f"Could I send back {what} of order {c.order_ref(oid)}? Please refund {where}.",
        ),
        capabilities=caps,
        desired=desired,
        refuse=not allowed,
        refusal_reason=f"the order is {status}; only delivered orders can be returned",
        # The reads that decide this outcome: a refusal rests on the order's status alone; a
        # refund to the gift card also needs the card's id, which only the user's record shows.
        required_reads=(_order_read(oid),)
        + ((Call("get_user_details", {"user_id": c.user["user_id"]}),) if to_gift and allowed else ()),
        target=oid,
        facts={"order_id": oid, "payment_method_id": pm},
        wrong_record=wrong,
        wrong_format=Call(desired.name, {**desired.arguments, "item_ids": ",".join(ids)}),
        describe=f"return items {', '.join(ids)} from order {oid}, refunding to {pm}",
    )


def question(c: Ctx, allowed: bool = True) -> Request:
    """A question answered from JSON tool results (a total, a price)."""
    rng = c.rng
    if rng.random() < 0.5:
        status = rng.choice(["pending", "processed", "delivered"])
        order = c.b.order(c.user, status, n_items=rng.randint(2, 4))
        oid = order["order_id"]
        total = round(sum(it["price"] for it in order["items"]), 2)
        # The plausible mistake: leave out the last line.
        wrong = round(total - order["items"][-1]["price"], 2)
        return Request(
            kind="question",
            capabilities=(DATA,),
            text=c.say(f"How much did I pay in total for order {oid}?", f"What was the total of my order {oid}?"),
            answer=f"{total:.2f}",
            wrong_record=f"{wrong:.2f}",
            target=oid,
            required_reads=(_order_read(oid),),
            facts={"order_id": oid},
            describe=f"The total of order {oid} is ${total:.2f}.",
        )
    pid = rng.choice(c.b.product_ids)
    product = c.b.products[pid]
    avail = [v for v in product["variants"].values() if v["available"]]
    best = min(avail, key=lambda v: v["price"])
    cheaper = [v for v in product["variants"].values() if v["price"] < best["price"]]
    wrong = min(cheaper, key=lambda v: v["price"]) if cheaper else max(avail, key=lambda v: v["price"])
    return Request(
        kind="question",
        capabilities=(DATA,),
        text=c.say(
            f"What is the price of the cheapest {product['name']} you have in stock?",
            f"How much is your cheapest available {product['name']}?",
        ),
        answer=f"{best['price']:.2f}",
        wrong_record=f"{wrong['price']:.2f}",
        target=pid,
        required_reads=(_product_read(pid),),
        facts={},
        describe=f"The cheapest available {product['name']} costs ${best['price']:.2f}.",
    )


KINDS = {
    "cancel": cancel,
    "modify_address": modify_address,
    "update_user_address": update_user_address,
    "exchange": lambda c, allowed, **kw: swap_items(c, allowed, delivered=True, **kw),
    "modify_items": lambda c, allowed, **kw: swap_items(c, allowed, delivered=False, **kw),
    "return": return_items,
    "question": question,
}


# What a family's gold solutions call: authentication and the reads, then each drawn kind's write.
READ_TOOLS = (
    "find_user_id_by_email",
    "find_user_id_by_name_zip",
    "get_user_details",
    "get_order_details",
    "get_product_details",
)
WRITE_TOOLS = {
    "cancel": "cancel_pending_order",
    "modify_address": "modify_pending_order_address",
    "update_user_address": "modify_user_address",
    "exchange": "exchange_delivered_order_items",
    "modify_items": "modify_pending_order_items",
    "return": "return_delivered_order_items",
}


def needs_tools(kinds: Iterable[str]) -> tuple[str, ...]:
    """The tools a family drawing requests of ``kinds`` needs (``register_family``'s ``needs_tools``)."""
    return READ_TOOLS + tuple(WRITE_TOOLS[k] for k in kinds if k in WRITE_TOOLS)
