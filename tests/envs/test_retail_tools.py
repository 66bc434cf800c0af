"""Tests of the retail toolkit: success paths, every precondition, calculator safety."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from trace_envs.db import Database
from trace_envs.domains.retail.calculator import calculate
from trace_envs.domains.retail.tools import RETAIL_POLICY, RETAIL_TOOLS, make_retail_domain
from trace_envs.errors import ToolError
from trace_envs.tasks import tau2
from trace_envs.world import check_arguments

# -- fixture world ------------------------------------------------------------------------
SHIRT, BAG = "1000000001", "1000000002"
BLUE, RED, GREEN, BLACK = "2000000001", "2000000002", "2000000003", "2000000004"  # BLACK unavailable
BAG_S, BAG_L = "2000000011", "2000000012"
ADA, BOB = "ada_lovelace_1234", "bob_smith_5678"
CARD, GIFT, PAYPAL = "credit_card_1111111", "gift_card_2222222", "paypal_3333333"
BOB_CARD, BOB_GIFT = "credit_card_4444444", "gift_card_5555555"
NEW_ADDRESS = {
    "address1": "1 New Road",
    "address2": "",
    "city": "Boston",
    "state": "MA",
    "country": "USA",
    "zip": "02101",
}


def _variant(item_id: str, color: str, price: float, available: bool = True) -> dict[str, Any]:
    return {"item_id": item_id, "options": {"color": color}, "available": available, "price": price}


def _line(product_id: str, name: str, variant: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "product_id": product_id,
        "item_id": variant["item_id"],
        "price": variant["price"],
        "options": dict(variant["options"]),
    }


def _address(zip_code: str) -> dict[str, str]:
    return {
        "address1": "10 Old Street",
        "address2": "Apt 2",
        "city": "New York",
        "country": "USA",
        "state": "NY",
        "zip": zip_code,
    }


def _order(order_id: str, user_id: str, status: str, lines: list[dict], pm: str, **extra: Any) -> dict:
    total = round(sum(line["price"] for line in lines), 2)
    history = [{"transaction_type": "payment", "amount": total, "payment_method_id": pm}]
    if status == "cancelled":
        history.append({"transaction_type": "refund", "amount": total, "payment_method_id": pm})
    return {
        "order_id": order_id,
        "user_id": user_id,
        "address": _address("10001"),
        "items": lines,
        "status": status,
        "fulfillments": [],
        "payment_history": history,
        **extra,
    }


def raw_tables() -> dict[str, dict[str, Any]]:
    """Fresh plain-JSON tables of the fixture world."""
    shirt = {
        BLUE: _variant(BLUE, "blue", 50.0),
        RED: _variant(RED, "red", 55.25),
        GREEN: _variant(GREEN, "green", 45.1),
        BLACK: _variant(BLACK, "black", 60.0, available=False),
    }
    bag = {BAG_S: _variant(BAG_S, "small", 100.0), BAG_L: _variant(BAG_L, "large", 130.5)}
    products = {
        SHIRT: {"name": "T-Shirt", "product_id": SHIRT, "variants": shirt},
        BAG: {"name": "Backpack", "product_id": BAG, "variants": bag},
    }
    s = lambda v: _line(SHIRT, "T-Shirt", shirt[v])  # noqa: E731
    b = lambda v: _line(BAG, "Backpack", bag[v])  # noqa: E731
    orders = {
        "#W0000001": _order("#W0000001", ADA, "pending", [s(BLUE), b(BAG_S)], CARD),
        "#W0000002": _order("#W0000002", ADA, "pending", [s(BLUE), s(BLUE)], GIFT),
        "#W0000003": _order("#W0000003", ADA, "processed", [s(BLUE)], CARD),
        "#W0000004": _order("#W0000004", ADA, "delivered", [s(BLUE), b(BAG_S), b(BAG_S)], CARD),
        "#W0000005": _order("#W0000005", ADA, "cancelled", [s(RED)], CARD, cancel_reason="ordered by mistake"),
        "#W0000006": _order("#W0000006", ADA, "pending (item modified)", [s(RED)], CARD),
        "#W0000007": _order("#W0000007", BOB, "delivered", [s(GREEN)], BOB_GIFT),
        "#W0000008": _order("#W0000008", BOB, "pending", [s(GREEN)], BOB_CARD),
    }
    users = {
        ADA: {
            "user_id": ADA,
            "name": {"first_name": "Ada", "last_name": "Lovelace"},
            "address": _address("10001"),
            "email": "ada.lovelace1234@example.com",
            "payment_methods": {
                CARD: {"source": "credit_card", "id": CARD, "brand": "visa", "last_four": "1111"},
                GIFT: {"source": "gift_card", "id": GIFT, "balance": 100.0},
                PAYPAL: {"source": "paypal", "id": PAYPAL},
            },
            "orders": [f"#W000000{i}" for i in range(1, 7)],
        },
        BOB: {
            "user_id": BOB,
            "name": {"first_name": "Bob", "last_name": "Smith"},
            "address": _address("94105"),
            "email": "bob.smith5678@example.com",
            "payment_methods": {
                BOB_CARD: {"source": "credit_card", "id": BOB_CARD, "brand": "amex", "last_four": "4444"},
                BOB_GIFT: {"source": "gift_card", "id": BOB_GIFT, "balance": 10.0},
            },
            "orders": ["#W0000007", "#W0000008"],
        },
    }
    return {"products": products, "users": users, "orders": orders}


@pytest.fixture
def db() -> Database:
    return Database.from_json(raw_tables())


def call(db: Database, name: str, **args: Any) -> Any:
    """Call a tool the way the env does: schema check first."""
    tool = RETAIL_TOOLS[name]
    assert check_arguments(tool, args) is None
    return tool.fn(db, **args)


def fails(db: Database, name: str, match: str, **args: Any) -> None:
    """The call raises ToolError matching ``match`` and leaves the database unchanged."""
    before = db.dumps()
    with pytest.raises(ToolError, match=match):
        call(db, name, **args)
    assert db.dumps() == before


def balance(db: Database, user_id: str, pm: str) -> float:
    return db.users[user_id]["payment_methods"][pm]["balance"]


# -- toolkit shape ------------------------------------------------------------------------
def test_toolkit_order_kinds_and_schemas():
    names = list(RETAIL_TOOLS)
    assert names[:7] == [
        "find_user_id_by_email",
        "find_user_id_by_name_zip",
        "get_user_details",
        "get_order_details",
        "get_product_details",
        "get_item_details",
        "list_all_product_types",
    ]
    assert names[7:9] == ["calculate", "transfer_to_human_agents"]
    assert names[9:] == [
        "cancel_pending_order",
        "modify_pending_order_address",
        "modify_pending_order_items",
        "modify_pending_order_payment",
        "modify_user_address",
        "return_delivered_order_items",
        "exchange_delivered_order_items",
    ]
    kinds = [t.kind for t in RETAIL_TOOLS.values()]
    assert kinds == ["read"] * 7 + ["generic", "terminal"] + ["write"] * 7
    for name, tool in RETAIL_TOOLS.items():
        assert tool.name == name and tool.description
        params = tool.parameters
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert sorted(params["required"]) == sorted(params["properties"])
        for prop in params["properties"].values():
            assert prop["type"] in ("string", "array") and prop["description"]
            assert "enum" not in prop
            if prop["type"] == "array":
                assert prop["items"] == {"type": "string"}
        json.dumps(tool.schema)
    desc = RETAIL_TOOLS["cancel_pending_order"].description
    assert "'no longer needed'" in desc and "'ordered by mistake'" in desc


def test_domain_and_policy():
    domain = make_retail_domain()
    assert domain.name == "retail" and domain.tools is RETAIL_TOOLS and domain.policy == RETAIL_POLICY
    assert 15 <= len(RETAIL_POLICY.strip().splitlines()) <= 25
    for phrase in ("no longer needed", "ordered by mistake", "yes", "zip"):
        assert phrase in RETAIL_POLICY


def test_check_arguments_rejects_extra_and_missing():
    tool = RETAIL_TOOLS["cancel_pending_order"]
    assert check_arguments(tool, {"order_id": "#W0000001"}) is not None
    assert check_arguments(tool, {"order_id": "#W0000001", "reason": "x", "extra": 1}) is not None
    assert (
        check_arguments(
            RETAIL_TOOLS["return_delivered_order_items"],
            {"order_id": "#W1", "item_ids": [1], "payment_method_id": CARD},
        )
        is not None
    )


# -- read tools ---------------------------------------------------------------------------
def test_find_user_id_by_email(db):
    assert call(db, "find_user_id_by_email", email="ada.lovelace1234@example.com") == ADA
    assert call(db, "find_user_id_by_email", email="Ada.Lovelace1234@Example.com") == ADA
    fails(db, "find_user_id_by_email", "user not found", email="nobody@example.com")


def test_find_user_id_by_name_zip(db):
    assert call(db, "find_user_id_by_name_zip", first_name="Ada", last_name="Lovelace", zip="10001") == ADA
    assert call(db, "find_user_id_by_name_zip", first_name="bob", last_name="SMITH", zip="94105") == BOB
    fails(db, "find_user_id_by_name_zip", "user not found", first_name="Ada", last_name="Lovelace", zip="94105")


def test_user_lookups_see_the_overlay(db):
    fork = db.fork()
    call(fork, "modify_user_address", user_id=ADA, **NEW_ADDRESS)
    fork.users.mut(BOB)["email"] = "bob@new.example.com"
    fork.users.put(
        "cy_young_1",
        {
            **copy.deepcopy(db.users[BOB]),
            "user_id": "cy_young_1",
            "email": "cy@example.com",
            "name": {"first_name": "Cy", "last_name": "Young"},
        },
    )
    assert call(fork, "find_user_id_by_name_zip", first_name="Ada", last_name="Lovelace", zip="02101") == ADA
    fails(fork, "find_user_id_by_name_zip", "not found", first_name="Ada", last_name="Lovelace", zip="10001")
    assert call(fork, "find_user_id_by_email", email="bob@new.example.com") == BOB
    fails(fork, "find_user_id_by_email", "not found", email="bob.smith5678@example.com")
    assert call(fork, "find_user_id_by_email", email="cy@example.com") == "cy_young_1"
    # The parent shares the base index but not the fork's overlay.
    assert call(db, "find_user_id_by_name_zip", first_name="Ada", last_name="Lovelace", zip="10001") == ADA
    assert call(db, "find_user_id_by_email", email="bob.smith5678@example.com") == BOB


def test_lookup_index_is_per_base():
    raw = raw_tables()
    raw["users"]["other_id_9"] = raw["users"].pop(ADA)
    other = Database.from_json(raw)
    assert call(Database.from_json(raw_tables()), "find_user_id_by_email", email="ada.lovelace1234@example.com") == ADA
    assert call(other, "find_user_id_by_email", email="ada.lovelace1234@example.com") == "other_id_9"


def test_get_user_and_order_details(db):
    assert call(db, "get_user_details", user_id=ADA)["payment_methods"][GIFT]["balance"] == 100.0
    fails(db, "get_user_details", "user not found", user_id="nobody_1")
    assert call(db, "get_order_details", order_id="#W0000001")["status"] == "pending"
    fails(db, "get_order_details", "order not found$", order_id="#W9999999")
    fails(db, "get_order_details", "start with '#'", order_id="W0000001")


def test_get_product_and_item_details(db):
    assert set(call(db, "get_product_details", product_id=SHIRT)["variants"]) == {BLUE, RED, GREEN, BLACK}
    fails(db, "get_product_details", "product not found", product_id=BLUE)
    assert call(db, "get_item_details", item_id=BAG_L)["price"] == 130.5
    assert call(db, "get_item_details", item_id=BLACK)["available"] is False
    fails(db, "get_item_details", "item not found", item_id=SHIRT)
    fork = db.fork()
    fork.products.mut(BAG)["variants"]["2000000013"] = _variant("2000000013", "medium", 115.0)
    assert call(fork, "get_item_details", item_id="2000000013")["price"] == 115.0
    fails(db, "get_item_details", "item not found", item_id="2000000013")


def test_list_all_product_types(db):
    types = call(db, "list_all_product_types")
    assert types == {"Backpack": BAG, "T-Shirt": SHIRT} and list(types) == ["Backpack", "T-Shirt"]
    types["Mutated"] = "1"
    assert call(db, "list_all_product_types") == {"Backpack": BAG, "T-Shirt": SHIRT}
    fork = db.fork()
    fork.products.put("1000000003", {"name": "Apron", "product_id": "1000000003", "variants": {}})
    assert list(call(fork, "list_all_product_types")) == ["Apron", "Backpack", "T-Shirt"]


# -- generic tools ------------------------------------------------------------------------
def test_calculate_tool_and_transfer(db):
    assert call(db, "calculate", expression="(1+2)*3.5/2") == 5.25
    assert call(db, "transfer_to_human_agents", summary="wants a refund outside policy") == "Transfer successful"


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("(1+2)*3.5/2", 5.25),
        ("-3 + 5", 2.0),
        ("-(2 - 5) * +2", 6.0),
        ("--4", 4.0),
        ("2 - -2", 4.0),
        ("10 / 3", 3.33),
        ("2/3", 0.67),
        (".5 + 1.", 1.5),
        ("652.61 + 473.43", 1126.04),
        ("2623.69 - 1126.04", 1497.65),
        ("1 - 2 - 3", -4.0),
        ("8 / 4 / 2", 1.0),
        ("2 + 3 * 4", 14.0),
        ("-0.001", 0.0),
        ("((((1))))", 1.0),
    ],
)
def test_calculator_accepts(expression, expected):
    result = calculate(expression)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize(
    "expression, match",
    [
        ("__import__('os')", "invalid characters"),
        ("abc", "invalid characters"),
        ("2 ** 3", r"\*\*"),
        ("2**3", r"\*\*"),
        ("1" * 300, "longer than 256"),
        ("(" * 40 + "1" + ")" * 40, "nested deeper"),
        ("1/0", "division by zero"),
        ("1/(2-2)", "division by zero"),
        ("", "empty"),
        ("   ", "empty"),
        ("1.2.3", "invalid number"),
        ("1 2", "unexpected"),
        ("2(3)", "unexpected"),
        ("(1+2", "missing"),
        ("1+", "end of expression"),
        ("*2", "unexpected"),
        (")", "unexpected"),
        ("1\n+2", "invalid characters"),
        ("1e5", "invalid characters"),
        (".", "invalid number"),
    ],
)
def test_calculator_rejects(expression, match):
    with pytest.raises(ToolError, match=match):
        calculate(expression)


def test_calculator_depth_limit_is_exact():
    assert calculate("(" * 32 + "7" + ")" * 32) == 7.0
    with pytest.raises(ToolError):
        calculate("(" * 33 + "7" + ")" * 33)


# -- cancel -------------------------------------------------------------------------------
def test_cancel_pending_order_credit_card(db):
    order = call(db, "cancel_pending_order", order_id="#W0000001", reason="no longer needed")
    assert order["status"] == "cancelled" and order["cancel_reason"] == "no longer needed"
    assert order["payment_history"][-1] == {"transaction_type": "refund", "amount": 150.0, "payment_method_id": CARD}
    assert db.orders["#W0000001"] is order and balance(db, ADA, GIFT) == 100.0


def test_cancel_pending_order_refunds_gift_card_at_once(db):
    call(db, "cancel_pending_order", order_id="#W0000002", reason="ordered by mistake")
    assert balance(db, ADA, GIFT) == 200.0
    assert db.orders["#W0000002"]["payment_history"][-1]["payment_method_id"] == GIFT


@pytest.mark.parametrize(
    "order_id, reason, match",
    [
        ("#W9999999", "no longer needed", "order not found"),
        ("#W0000003", "no longer needed", "non-pending"),
        ("#W0000004", "no longer needed", "non-pending"),
        ("#W0000005", "no longer needed", "non-pending"),
        ("#W0000006", "no longer needed", "non-pending"),
        ("#W0000001", "No longer needed", "invalid reason"),
        ("#W0000001", "changed my mind", "invalid reason"),
        ("#W0000001", "no longer needed.", "invalid reason"),
    ],
)
def test_cancel_pending_order_errors(db, order_id, reason, match):
    fails(db, "cancel_pending_order", match, order_id=order_id, reason=reason)


# -- modify address / payment / user address -----------------------------------------------
def test_modify_pending_order_address(db):
    for order_id in ("#W0000001", "#W0000006"):  # status containing "pending" is enough
        assert call(db, "modify_pending_order_address", order_id=order_id, **NEW_ADDRESS)["address"] == NEW_ADDRESS
    assert db.users[ADA]["address"]["zip"] == "10001"
    fails(db, "modify_pending_order_address", "order not found", order_id="#W9", **NEW_ADDRESS)
    for order_id in ("#W0000003", "#W0000004", "#W0000005"):
        fails(db, "modify_pending_order_address", "non-pending", order_id=order_id, **NEW_ADDRESS)


def test_modify_user_address(db):
    user = call(db, "modify_user_address", user_id=ADA, **NEW_ADDRESS)
    assert user["address"] == NEW_ADDRESS and db.users[ADA]["address"] == NEW_ADDRESS
    assert db.orders["#W0000001"]["address"]["zip"] == "10001"
    fails(db, "modify_user_address", "user not found", user_id="nobody_1", **NEW_ADDRESS)


def test_modify_pending_order_payment_card_to_gift_card(db):
    order = call(db, "modify_pending_order_payment", order_id="#W0000001", payment_method_id=PAYPAL)
    assert order["payment_history"][1:] == [
        {"transaction_type": "payment", "amount": 150.0, "payment_method_id": PAYPAL},
        {"transaction_type": "refund", "amount": 150.0, "payment_method_id": CARD},
    ]
    fork = Database.from_json(raw_tables())
    fork.orders.mut("#W0000003")["status"] = "pending"  # a 50.00 order paid by card
    call(fork, "modify_pending_order_payment", order_id="#W0000003", payment_method_id=GIFT)
    assert balance(fork, ADA, GIFT) == 50.0


def test_modify_pending_order_payment_gift_card_to_card_refunds_gift_card(db):
    call(db, "modify_pending_order_payment", order_id="#W0000002", payment_method_id=CARD)
    assert balance(db, ADA, GIFT) == 200.0
    assert [p["transaction_type"] for p in db.orders["#W0000002"]["payment_history"]] == [
        "payment",
        "payment",
        "refund",
    ]


def test_modify_pending_order_payment_after_item_modification(db):
    order = call(db, "modify_pending_order_payment", order_id="#W0000006", payment_method_id=GIFT)
    assert order["status"] == "pending (item modified)" and balance(db, ADA, GIFT) == 44.75


def test_modify_pending_order_payment_errors(db):
    fails(db, "modify_pending_order_payment", "order not found", order_id="#W9", payment_method_id=PAYPAL)
    fails(db, "modify_pending_order_payment", "non-pending", order_id="#W0000004", payment_method_id=PAYPAL)
    fails(
        db, "modify_pending_order_payment", "payment method not found", order_id="#W0000001", payment_method_id=BOB_CARD
    )
    fails(db, "modify_pending_order_payment", "different", order_id="#W0000001", payment_method_id=CARD)
    # 150.00 > the gift card's 100.00
    fails(
        db,
        "modify_pending_order_payment",
        "insufficient gift card balance",
        order_id="#W0000001",
        payment_method_id=GIFT,
    )
    call(db, "modify_pending_order_payment", order_id="#W0000001", payment_method_id=PAYPAL)
    fails(db, "modify_pending_order_payment", "exactly one payment", order_id="#W0000001", payment_method_id=CARD)


# -- modify items -------------------------------------------------------------------------
def test_modify_pending_order_items_charge_card(db):
    order = call(
        db,
        "modify_pending_order_items",
        order_id="#W0000001",
        item_ids=[BLUE, BAG_S],
        new_item_ids=[RED, BAG_L],
        payment_method_id=CARD,
    )
    assert order["status"] == "pending (item modified)"
    assert [(it["item_id"], it["price"], it["options"]) for it in order["items"]] == [
        (RED, 55.25, {"color": "red"}),
        (BAG_L, 130.5, {"color": "large"}),
    ]
    assert order["payment_history"][-1] == {"transaction_type": "payment", "amount": 35.75, "payment_method_id": CARD}
    # The catalog record was copied, not aliased.
    order["items"][0]["options"]["color"] = "x"
    assert db.products[SHIRT]["variants"][RED]["options"] == {"color": "red"}


def test_modify_pending_order_items_duplicates_and_gift_card_refund(db):
    order = call(
        db,
        "modify_pending_order_items",
        order_id="#W0000002",
        item_ids=[BLUE, BLUE],
        new_item_ids=[GREEN, RED],
        payment_method_id=GIFT,
    )
    assert [it["item_id"] for it in order["items"]] == [GREEN, RED]
    # 45.10 + 55.25 - 100.00 = 0.35 charged to the gift card.
    assert order["payment_history"][-1] == {"transaction_type": "payment", "amount": 0.35, "payment_method_id": GIFT}
    assert balance(db, ADA, GIFT) == 99.65


def test_modify_pending_order_items_swap_replaces_each_line_once(db):
    order = db.orders.mut("#W0000001")
    order["items"][1] = copy.deepcopy(db.orders["#W0000006"]["items"][0])  # [BLUE, RED]
    order = call(
        db,
        "modify_pending_order_items",
        order_id="#W0000001",
        item_ids=[BLUE, RED],
        new_item_ids=[RED, BLUE],
        payment_method_id=CARD,
    )
    assert [(it["item_id"], it["price"]) for it in order["items"]] == [(RED, 55.25), (BLUE, 50.0)]
    assert order["payment_history"][-1] == {"transaction_type": "refund", "amount": 0.0, "payment_method_id": CARD}


def test_modify_pending_order_items_refund_to_gift_card(db):
    order = call(
        db,
        "modify_pending_order_items",
        order_id="#W0000001",
        item_ids=[BLUE],
        new_item_ids=[GREEN],
        payment_method_id=GIFT,
    )
    assert order["payment_history"][-1] == {"transaction_type": "refund", "amount": 4.9, "payment_method_id": GIFT}
    assert balance(db, ADA, GIFT) == 104.9


@pytest.mark.parametrize(
    "order_id, old, new, pm, match",
    [
        ("#W9", [BLUE], [RED], CARD, "order not found"),
        ("#W0000006", [RED], [BLUE], CARD, "non-pending"),  # already modified once
        ("#W0000003", [BLUE], [RED], CARD, "non-pending"),
        ("#W0000004", [BLUE], [RED], CARD, "non-pending"),
        ("#W0000001", [BLUE, BAG_S], [RED], CARD, "number of items"),
        ("#W0000001", [], [], CARD, "must not be empty"),
        ("#W0000001", [GREEN], [RED], CARD, f"item {GREEN} not found"),
        ("#W0000001", [BLUE, BLUE], [RED, GREEN], CARD, f"item {BLUE} not found"),  # only one BLUE ordered
        ("#W0000001", [BLUE], [BLUE], CARD, "same as the old item"),
        ("#W0000001", [BLUE], [BAG_L], CARD, "not a variant of the same product"),
        ("#W0000001", [BLUE], ["9999999999"], CARD, "not a variant of the same product"),
        ("#W0000001", [BLUE], [BLACK], CARD, "not available"),
        ("#W0000001", [BLUE], [RED], BOB_CARD, "payment method not found"),
        ("#W0000001", [BLUE], [RED], "credit_card_0000000", "payment method not found"),
    ],
)
def test_modify_pending_order_items_errors(db, order_id, old, new, pm, match):
    fails(
        db, "modify_pending_order_items", match, order_id=order_id, item_ids=old, new_item_ids=new, payment_method_id=pm
    )


def test_gift_card_balance_is_rounded_to_cents(db):
    db.users.mut(ADA)["payment_methods"][GIFT]["balance"] = 0.7  # 0.7 + 4.9 is 5.6000000000000005 in floats
    call(
        db,
        "modify_pending_order_items",
        order_id="#W0000002",
        item_ids=[BLUE],
        new_item_ids=[GREEN],
        payment_method_id=GIFT,
    )
    assert balance(db, ADA, GIFT) == 5.6


def test_modify_pending_order_items_gift_card_must_cover(db):
    db.users.mut(ADA)["payment_methods"][GIFT]["balance"] = 35.74
    fails(
        db,
        "modify_pending_order_items",
        "insufficient gift card balance",
        order_id="#W0000001",
        item_ids=[BLUE, BAG_S],
        new_item_ids=[RED, BAG_L],
        payment_method_id=GIFT,
    )
    db.users.mut(ADA)["payment_methods"][GIFT]["balance"] = 35.75
    call(
        db,
        "modify_pending_order_items",
        order_id="#W0000001",
        item_ids=[BLUE, BAG_S],
        new_item_ids=[RED, BAG_L],
        payment_method_id=GIFT,
    )
    assert balance(db, ADA, GIFT) == 0.0


# -- return -------------------------------------------------------------------------------
def test_return_delivered_order_items(db):
    order = call(
        db, "return_delivered_order_items", order_id="#W0000004", item_ids=[BAG_S, BLUE, BAG_S], payment_method_id=CARD
    )
    assert order["status"] == "return requested"
    assert order["return_items"] == sorted([BAG_S, BLUE, BAG_S]) and order["return_payment_method_id"] == CARD
    assert len(order["payment_history"]) == 1 and balance(db, ADA, GIFT) == 100.0


def test_return_to_gift_card(db):
    order = call(db, "return_delivered_order_items", order_id="#W0000004", item_ids=[BAG_S], payment_method_id=GIFT)
    assert order["return_payment_method_id"] == GIFT and balance(db, ADA, GIFT) == 100.0


@pytest.mark.parametrize(
    "order_id, items, pm, match",
    [
        ("#W9", [BLUE], CARD, "order not found"),
        ("#W0000001", [BLUE], CARD, "non-delivered"),
        ("#W0000003", [BLUE], CARD, "non-delivered"),
        ("#W0000005", [RED], CARD, "non-delivered"),
        ("#W0000004", [BLUE], PAYPAL, "original payment method or a gift card"),
        ("#W0000004", [BLUE], BOB_GIFT, "payment method not found"),
        ("#W0000004", [RED], CARD, f"item {RED} not found"),
        ("#W0000004", [BLUE, BLUE], CARD, f"item {BLUE} not found"),
        ("#W0000004", [], CARD, "must not be empty"),
    ],
)
def test_return_errors(db, order_id, items, pm, match):
    fails(db, "return_delivered_order_items", match, order_id=order_id, item_ids=items, payment_method_id=pm)


# -- exchange -----------------------------------------------------------------------------
def test_exchange_delivered_order_items(db):
    order = call(
        db,
        "exchange_delivered_order_items",
        order_id="#W0000004",
        item_ids=[BAG_S, BLUE],
        new_item_ids=[BAG_L, GREEN],
        payment_method_id=GIFT,
    )
    assert order["status"] == "exchange requested"
    assert order["exchange_items"] == sorted([BAG_S, BLUE]) and order["exchange_new_items"] == sorted([BAG_L, GREEN])
    assert order["exchange_payment_method_id"] == GIFT
    assert order["exchange_price_difference"] == 25.6  # 130.50 + 45.10 - 100.00 - 50.00
    assert balance(db, ADA, GIFT) == 100.0 and len(order["payment_history"]) == 1
    assert [it["item_id"] for it in order["items"]] == [BLUE, BAG_S, BAG_S]  # items untouched until exchanged


def test_exchange_negative_difference_and_duplicates(db):
    order = call(
        db,
        "exchange_delivered_order_items",
        order_id="#W0000004",
        item_ids=[BLUE],
        new_item_ids=[GREEN],
        payment_method_id=CARD,
    )
    assert order["exchange_price_difference"] == -4.9
    fork = Database.from_json(raw_tables())
    order = call(
        fork,
        "exchange_delivered_order_items",
        order_id="#W0000004",
        item_ids=[BAG_S, BAG_S],
        new_item_ids=[BAG_L, BAG_L],
        payment_method_id=PAYPAL,
    )
    assert order["exchange_price_difference"] == 61.0


@pytest.mark.parametrize(
    "order_id, old, new, pm, match",
    [
        ("#W9", [BLUE], [RED], CARD, "order not found"),
        ("#W0000001", [BLUE], [RED], CARD, "non-delivered"),
        ("#W0000005", [RED], [BLUE], CARD, "non-delivered"),
        ("#W0000004", [BLUE], [RED, GREEN], CARD, "number of items"),
        ("#W0000004", [RED], [GREEN], CARD, f"item {RED} not found"),
        ("#W0000004", [BLUE, BLUE], [RED, GREEN], CARD, f"item {BLUE} not found"),
        ("#W0000004", [BLUE], [BLUE], CARD, "same as the old item"),
        ("#W0000004", [BLUE], [BAG_L], CARD, "not a variant of the same product"),
        ("#W0000004", [BLUE], [BLACK], CARD, "not available"),
        ("#W0000004", [BLUE], [RED], BOB_CARD, "payment method not found"),
    ],
)
def test_exchange_errors(db, order_id, old, new, pm, match):
    fails(
        db,
        "exchange_delivered_order_items",
        match,
        order_id=order_id,
        item_ids=old,
        new_item_ids=new,
        payment_method_id=pm,
    )


def test_exchange_gift_card_must_cover_positive_difference(db):
    # Bob's gift card holds 10.00; GREEN -> RED costs 10.15 more, GREEN -> BLUE 4.90 more.
    fails(
        db,
        "exchange_delivered_order_items",
        "insufficient gift card balance",
        order_id="#W0000007",
        item_ids=[GREEN],
        new_item_ids=[RED],
        payment_method_id=BOB_GIFT,
    )
    order = call(
        db,
        "exchange_delivered_order_items",
        order_id="#W0000007",
        item_ids=[GREEN],
        new_item_ids=[BLUE],
        payment_method_id=BOB_GIFT,
    )
    assert order["exchange_price_difference"] == 4.9 and balance(db, BOB, BOB_GIFT) == 10.0


# -- copy-on-write discipline --------------------------------------------------------------
def test_writes_never_touch_the_shared_base():
    raw = raw_tables()
    snapshot = json.dumps(raw, sort_keys=True)
    db = Database.from_json(raw)
    fork = db.fork()
    call(fork, "cancel_pending_order", order_id="#W0000002", reason="no longer needed")
    call(
        fork,
        "modify_pending_order_items",
        order_id="#W0000001",
        item_ids=[BLUE],
        new_item_ids=[RED],
        payment_method_id=GIFT,
    )
    call(fork, "modify_user_address", user_id=BOB, **NEW_ADDRESS)
    call(fork, "return_delivered_order_items", order_id="#W0000004", item_ids=[BLUE], payment_method_id=CARD)
    call(
        fork,
        "exchange_delivered_order_items",
        order_id="#W0000007",
        item_ids=[GREEN],
        new_item_ids=[BLUE],
        payment_method_id=BOB_GIFT,
    )
    call(fork, "modify_pending_order_address", order_id="#W0000008", **NEW_ADDRESS)
    assert json.dumps(raw, sort_keys=True) == snapshot
    assert db.dumps() == Database.from_json(raw_tables()).dumps()
    assert fork.dumps() != db.dumps()


# -- the real τ²-bench data ----------------------------------------------------------------
def _load_tau2(tau2_dir: Path) -> tuple[dict, list]:
    retail = tau2.resolve_data_dir(tau2_dir)  # data/tau2 or its domains/retail
    with open(retail / "db.json", encoding="utf-8") as f:
        data = json.load(f)
    with open(retail / "tasks.json", encoding="utf-8") as f:
        tasks = json.load(f)
    return data, tasks


def _gift_card_short(db: Database, args: dict) -> bool:
    """Independently recompute whether a gift card cannot cover an exchange's price difference."""
    order = db.orders[args["order_id"]]
    user = db.users[order["user_id"]]
    method = user["payment_methods"].get(args["payment_method_id"], {})
    prices = {it["item_id"]: it["price"] for it in order["items"]}
    variants = {v["item_id"]: v for p in db.products.values() for v in p["variants"].values()}
    diff = sum(variants[i]["price"] for i in args["new_item_ids"]) - sum(prices[i] for i in args["item_ids"])
    return method.get("source") == "gift_card" and method["balance"] < round(diff, 2)


def test_tau2_gold_actions_apply_cleanly(tau2_dir: Path):
    data, tasks = _load_tau2(tau2_dir)
    base = Database.from_json(data)
    writes, refused_writes = 0, 0
    for task in tasks:
        db = base.fork()
        for action in task["evaluation_criteria"]["actions"]:
            tool = RETAIL_TOOLS[action["name"]]
            args = action["arguments"]
            assert check_arguments(tool, args) is None, (task["id"], action)
            try:
                tool.fn(db, **args)
            except ToolError as err:
                # Gold trajectories include deliberate probes (a wrong email, an order id
                # without '#', an unknown product id) and one exchange the README's rules
                # forbid; anything else is a bug in the tools.
                if tool.kind == "read":
                    assert "not found" in str(err), (task["id"], action, err)
                    continue
                assert "insufficient gift card balance" in str(err) and _gift_card_short(db, args), (
                    task["id"],
                    action,
                    err,
                )
                refused_writes += 1
                continue
            writes += tool.kind == "write"
    assert refused_writes <= 1 and writes >= 100
    assert base.dumps() == Database.from_json(data).dumps()
