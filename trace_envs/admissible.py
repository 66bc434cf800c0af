"""Admissible actions: the exact action strings that make sense now, from what the agent has seen.

Text-game suites give agents a list of valid commands (TextWorld's admissible commands,
Jericho's valid actions), so that small and classic agents choose instead of writing.
:func:`admissible_actions` does the same for the retail world. It reads only the
conversation (``info["messages"]``) and the tool schemas (``info["tools"]``): never the
task's gold, the customer's hidden data, or database records the agent has not been shown.

## What is listed, in this order (each group de-duplicated, in the order things were seen)

1. **Messages**: ask for the customer's identity (until a lookup found them); "anything
   else?"; a generic refusal and one per order whose details were read; goodbye.
2. **Accepted writes**: after the customer said yes to a message, each write candidate
   (group 5) whose values that message named, as a tool call. A write is listed only then.
3. **Reads**: look up each email and each name + zip the customer gave; the details of
   each user id seen; of each order id seen (in the customer's words or a record); of
   product the customer named (of a read order or the catalog; every catalog product when
   they named none), then of the other products of read orders; the product catalog; a
   transfer to a human.
4. **Answers**: "The amount is $X." for amounts in the latest tool result: an order's
   total and item prices; a product's cheapest and priciest available variant and its
   cheapest variant overall.
5. **Proposals**: "To confirm, I will ... Shall I proceed?" naming every value of a
   write candidate. Candidates, bounded so the oracle's write is always among them:
   cancel an order the customer named (unless read as non-pending) or read as pending,
   with each allowed reason; move such an order, or the user's default address, to an
   address the customer gave; return from a delivered order read: each item alone, all
   items, the items the customer named and the rest, refunded to the original method or
   a gift card seen; exchange (delivered) or modify (pending) one item of a read order
   whose product was read, for the variant whose options the customer named, the
   cheapest available variant having each option value they named, and the cheapest
   available, settled with the original method.

Near-miss twins (``near_misses=True``) add the mistakes agents make, as choosable actions:
order ids without ``#`` (reads and writes), a list argument as a comma string, a zip as a
number, and, next to each accepted swap or return, the same write with another record.

``max_actions`` caps the list: groups are cut from the last (proposals, then answers,
reads, accepted writes; messages are never cut), so the cut is stable under the order
above. :class:`AdmissibleActions` keeps the state of one episode and reads only the
messages added since its last call, which keeps it fast.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str  # a str as json.dumps writes it
from typing import Any

from trace_envs._json import loads
from trace_envs.actions import _CLOSE, _OPEN, say, tool_call

__all__ = ["AdmissibleActions", "AdmissibleConfig", "MESSAGES", "admissible_actions"]

ASK_IDENTITY = "Could you please tell me your email address, or your name and zip code?"
ANYTHING_ELSE = "Is there anything else I can help you with?"
REFUSE = "I'm sorry, but I cannot do that: our policy does not allow it."
GOODBYE = "Thank you for contacting us. Goodbye!"
MESSAGES = (ASK_IDENTITY, ANYTHING_ELSE, REFUSE, GOODBYE)
TRANSFER_SUMMARY = "The customer needs help beyond my tools."
MIN_ACTIONS = 8  # room for the messages and a few calls

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NAME_ZIP = re.compile(r"\bI'm ([A-Z][\w'-]*) ([A-Z][\w'-]*), zip code (\d{5})")
_ORDER = re.compile(r"#?\bW\d{7}\b")
_ORDER_ID = re.compile(r"W(?<=\bW)\d{7}\b")  # _ORDER without the '#': the same ids, found from each "W"
_ADDRESS = re.compile(
    r"\b(\d+ [A-Z][^,]*), (?:(Suite \d+|Apt\.? \d+|Unit \d+), )?([A-Z][^,]*), ([A-Z]{2}), "
    r"(\d{5}), (USA)\b"
)
_YES = re.compile(r"^\W*(?:yes|yeah|yep|sure|ok(?:ay)?|please do|go ahead)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"[\s(](?:(?<=[.?!;]\s)\s*|(?<=\()\d+\)\s*)")  # splits as r"(?<=[.?!;])\s+|\(\d+\)\s*"
# does (every match starts with a space or "("), but skips to those characters first
_SWAPS = {"exchange_delivered_order_items": "delivered", "modify_pending_order_items": "pending"}
_CONSTANT_READS = (
    ("list_all_product_types", tool_call("list_all_product_types")),
    ("transfer_to_human_agents", tool_call("transfer_to_human_agents", summary=TRANSFER_SUMMARY)),
)


@dataclass(frozen=True)
class AdmissibleConfig:
    """The env's ``admissible_actions``, ``near_misses`` and ``max_actions`` arguments, checked."""

    on: bool = False
    near_misses: bool = False
    max_actions: int = 128

    def __post_init__(self) -> None:
        for name in ("on", "near_misses"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"{'admissible_actions' if name == 'on' else name} must be a bool, got {getattr(self, name)!r}"
                )
        if (
            not isinstance(self.max_actions, int)
            or isinstance(self.max_actions, bool)
            or self.max_actions < MIN_ACTIONS
        ):
            raise ValueError(f"max_actions must be an integer >= {MIN_ACTIONS}, got {self.max_actions!r}")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _str_call(name: str, /, **arguments: Any) -> str:
    """``tool_call(name, **arguments)``, the same text, written without ``json.dumps`` when every
    value is a string or a list of strings (as ``json.dumps`` writes them by default)."""
    fields = []
    for key, value in arguments.items():
        if type(value) is str:
            fields.append(_json_str(key) + ": " + _json_str(value))
        elif type(value) is list and all(type(v) is str for v in value):
            fields.append(_json_str(key) + ": [" + ", ".join(map(_json_str, value)) + "]")
        else:
            return tool_call(name, **arguments)
    payload = '{"name": ' + _json_str(name) + ', "arguments": {' + ", ".join(fields) + "}}"
    return _OPEN + payload.replace("<", "\\u003c") + _CLOSE


_READ_PREFIXES: dict[tuple[str, str], str] = {}  # (tool, argument) -> the text before the argument's value


def _read_call(tool: str, field: str, value: Any) -> str:
    """``_str_call(tool, **{field: value})``, the same text, from the call's text up to the value
    (built once per tool and argument)."""
    if type(value) is not str:
        return _str_call(tool, **{field: value})
    prefix = _READ_PREFIXES.get((tool, field))
    if prefix is None:
        prefix = _READ_PREFIXES[(tool, field)] = _OPEN + (
            '{"name": ' + _json_str(tool) + ', "arguments": {' + _json_str(field) + ": "
        ).replace("<", "\\u003c")
    return prefix + _json_str(value).replace("<", "\\u003c") + "}}" + _CLOSE


def _salient(arguments: Mapping[str, Any]) -> list[str]:
    """The values a proposal must name (lower case), as the scripted customer checks them."""
    out = []
    for key, value in arguments.items():
        if key == "user_id":
            continue
        for v in value if isinstance(value, list) else (value,):
            text = str(v)
            if text:
                out.append(text.lower())
    return out


def _named_in(args: Mapping[str, Any], said: str) -> bool:
    """Whether ``said`` holds every value of :func:`_salient` (``all(v in said for v in _salient(args))``),
    checked value by value, stopping at the first one missing."""
    for key, value in args.items():
        if key == "user_id":
            continue
        if type(value) is str:
            if value.lower() not in said:  # "" is in every text, as _salient leaves it out
                return False
        else:
            for v in value if isinstance(value, list) else (value,):
                if str(v).lower() not in said:
                    return False
    return True


_AMOUNTS: dict[Any, str] = {}  # an amount (not zero) -> its answer, for every episode


def _address_line(args: Mapping[str, Any]) -> str:
    keys = ("address1", "address2", "city", "state", "zip", "country")
    return ", ".join(str(args[k]) for k in keys if args.get(k))


def describe(name: str, args: Mapping[str, Any]) -> str:
    """A write in words, naming every value the customer must hear to confirm it."""
    ids = lambda key: ", ".join(map(str, args.get(key, [])))  # noqa: E731
    if name == "cancel_pending_order":
        return f"cancel order {args['order_id']} with reason '{args['reason']}'"
    if name == "modify_pending_order_address":
        return f"change the shipping address of order {args['order_id']} to {_address_line(args)}"
    if name == "modify_user_address":
        return f"update your default address to {_address_line(args)}"
    if name == "return_delivered_order_items":
        return f"return items {ids('item_ids')} from order {args['order_id']}, refunding to {args['payment_method_id']}"
    if name in _SWAPS:
        verb = "exchange" if name.startswith("exchange") else "modify"
        return (
            f"{verb} items {ids('item_ids')} in order {args['order_id']} for items {ids('new_item_ids')}, "
            f"settling any difference with {args['payment_method_id']}"
        )
    if name == "modify_pending_order_payment":
        return f"change the payment method of order {args['order_id']} to {args['payment_method_id']}"
    values = ", ".join(f"{k} {v}" for k, v in args.items())
    return f"{name.replace('_', ' ')} with {values}"


def propose(name: str, args: Mapping[str, Any]) -> str:
    """The message proposing a write for the customer to confirm."""
    return f"To confirm, I will {describe(name, args)}. Shall I proceed?"


class AdmissibleActions:
    """The admissible actions of one episode, updated incrementally from its messages.

    ``tools`` are the OpenAI function schemas (``info["tools"]``). Call :meth:`update`
    with the whole message history after every step; it parses only what is new.
    """

    def __init__(
        self, tools: Sequence[Mapping[str, Any]], *, near_misses: bool = False, max_actions: int = 128
    ) -> None:
        if not (type(near_misses) is bool and type(max_actions) is int and max_actions >= MIN_ACTIONS):
            AdmissibleConfig(True, near_misses, max_actions)  # checks the arguments
        self.schemas = {
            f["name"]: f
            for t in tools
            if (type(t) is dict or isinstance(t, Mapping))
            and (type(f := t.get("function")) is dict or isinstance(f, Mapping))
        }
        self.near_misses = near_misses
        self.max_actions = max_actions
        self._seen = 0
        self._calls: dict[str, str] = {}  # tool_call_id -> tool name (a result reads nothing else of its call)
        self.user_text = ""  # every customer message, joined (original case)
        # Ordered sets (dicts with True values): what was seen, in the order it was seen.
        self.emails: dict[str, bool] = {}
        self.name_zips: dict[tuple[str, str, str], bool] = {}
        self.named_orders: dict[str, bool] = {}  # order ids in the customer's words, with '#'
        self.addresses: dict[tuple[tuple[str, str], ...], bool] = {}
        self.user_ids: dict[str, bool] = {}
        self.authenticated = ""
        self.order_ids: dict[str, bool] = {}  # every order id seen anywhere
        self.orders: dict[str, dict[str, Any]] = {}  # order id -> its latest record
        self.users: dict[str, dict[str, Any]] = {}
        self.products: dict[str, dict[str, Any]] = {}
        self.catalog: dict[str, str] = {}  # product name -> product id
        self.latest: tuple[str, Any] | None = None  # (tool name, parsed result)
        self.accepted = ""  # the agent message the customer just said yes to
        self._last_agent_text = ""
        self._strings: dict[tuple, str] = {}
        self._constant_reads = [text for name, text in _CONSTANT_READS if name in self.schemas]
        # The ordered sets the reads are built from, with their tool, for the tools there are.
        self._read_sets = [
            (tool, seen)
            for tool, seen in (
                ("find_user_id_by_email", self.emails),
                ("find_user_id_by_name_zip", self.name_zips),
                ("get_user_details", self.user_ids),
                ("get_order_details", self.order_ids),
            )
            if tool in self.schemas
        ]
        self._lower = ""  # user_text.lower(), kept in step
        self._said: list[str] = []  # each customer message, lower case
        self._sentences: dict[int, list[str]] = {}  # index in _said -> that message's sentences, when needed
        self._names: set[str] = set()  # product names seen in records (lower case)
        self._unmentioned: set[str] = set()  # ... those the customer has not used yet
        # Bumped when what the reads (resp. the messages, writes and proposals) are built from
        # changes; the groups are rebuilt only then (and a group rebuilt equal is kept as it was).
        self._v_reads = self._v_writes = 0
        self._b_reads = self._b_writes = -1
        self._reads_list: list[str] = []
        # The read calls of each ordered set above, appended as its keys arrive (and the number
        # of keys done), so that a rebuild builds only the calls of what is new.
        self._read_calls: dict[str, tuple[list[str], list[int]]] = {
            tool: ([], [0])
            for tool in ("find_user_id_by_email", "find_user_id_by_name_zip", "get_user_details", "get_order_details")
        }
        self._product_reads: dict[str, str] = {}  # product id -> its read call
        # Bumped when the catalog, or a record of self.products, self.orders or self.users, changes.
        self._t_catalog = self._t_orders = 0
        # (orders version, (lower-case name, product id) of each item), and the same of the catalog.
        self._items: tuple[int, list[tuple[str, str]]] = (-1, [])
        self._catalog_lower: tuple[int, list[tuple[str, str]]] = (-1, [])
        self._said_upto: dict[str, int] = {}  # see _product_ids
        self._variants: dict[int, tuple] = {}  # id(product) -> (product, its variants prepared, those available)
        self._products_named: tuple[tuple[int, int, int], list[str]] = ((-1, -1, -1), [])  # _product_ids, and its key
        self._open: tuple[tuple[int, int], list[str]] = ((-1, -1), [])  # _open_orders, and its key
        # What the writes on the open orders and addresses, and on each order read, were built from, and them.
        self._by_address: tuple[tuple, list[list]] = ((None,), [])
        self._by_order: dict[str, tuple[Any, tuple, list[list]]] = {}  # order id -> (order, key, its writes)
        self._order_items: dict[str, tuple] = {}  # order id -> (order, its items with an id, their product ids)
        self._abouts: dict[str, tuple[int, str]] = {}  # order id -> (messages read, _about of it then)
        # [tool, arguments, proposal] of each write candidate (and its call, once needed), and
        # those built in this episode, by a key of the values that make the arguments.
        self._writes: list[list] = []
        self._candidates: dict[tuple, list] = {}
        self._refusals: dict[str, str] = {}  # order id -> the refusal naming it
        self._messages_key: tuple[bool, int] = (False, -1)  # what the messages were built from
        self._message_list: list[str] = []
        self._proposals: list[str] = []
        self._answers_for: Any = None
        self._answer_list: list[str] = []
        self._listed: tuple[Any, ...] = ()  # what the last list was built from
        self._list: list[str] = []

    # ------------------------------------------------------------------ observing
    def update(self, messages: Sequence[Mapping[str, Any]]) -> list[str]:
        """Read the messages not seen yet, then return the admissible actions."""
        seen = self._seen
        if len(messages) < seen:
            raise ValueError("messages shrank: use a new AdmissibleActions for a new episode")
        for m in messages[seen:]:
            self._observe(m)
        self._seen = len(messages)
        return self.actions()

    def _observe(self, m: Mapping[str, Any]) -> None:
        role = m.get("role")
        content = m.get("content") or ""
        if role == "user":
            self.accepted = self._last_agent_text if _YES.search(content) else ""
            self._last_agent_text = ""
            lower = content.lower()
            self.user_text += "\n" + content
            self._lower += "\n" + lower
            self._said.append(lower)
            found = False
            # Each pattern needs a literal ("@", ", zip code ", ", USA"): no scan without it.
            for email in _EMAIL.findall(content) if "@" in content else ():
                self.emails[email] = found = True
            for name_zip in _NAME_ZIP.findall(content) if ", zip code " in content else ():
                self.name_zips[name_zip] = found = True
            for oid in _ORDER_ID.findall(content) if "W" in content else ():
                oid = "#" + oid
                self.named_orders[oid] = self.order_ids[oid] = found = True
            for a1, a2, city, state, zip_, country in _ADDRESS.findall(content) if ", USA" in content else ():
                self.addresses[
                    (
                        ("address1", a1),
                        ("address2", a2),
                        ("city", city),
                        ("country", country),
                        ("state", state),
                        ("zip", zip_),
                    )
                ] = found = True
            # The lists read the customer's words only for ids, addresses and names of things seen.
            unmentioned = self._unmentioned
            named = [n for n in unmentioned if n in lower] if unmentioned else ()
            if found or named:
                unmentioned.difference_update(named)
                self._v_reads += 1
                self._v_writes += 1
        elif role == "assistant":
            self.accepted = ""
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                self._calls[call.get("id", "")] = fn.get("name", "")
            if content:
                self._last_agent_text = content
        elif role == "tool":
            name = self._calls.get(m.get("tool_call_id", ""))
            self._result(m.get("name", "") if name is None else name, content)

    def _new_names(self, names: Iterable[str]) -> None:
        """Adds product names seen in a record (lower case)."""
        new = set(names).difference(self._names)
        if new:
            self._names |= new
            self._unmentioned |= new

    def _result(self, name: str, content: str) -> None:
        if content.startswith("Error"):
            self.latest = None
            return
        if name in ("find_user_id_by_email", "find_user_id_by_name_zip"):
            if content != self.authenticated:
                self.authenticated = content
                self.user_ids[content] = True
                self._v_reads += 1
                self._v_writes += 1
            self.latest = (name, content)
            return
        try:
            data = loads(content)
        except ValueError:
            data = content
        self.latest = (name, data)
        if type(data) is not dict:
            return
        if name == "list_all_product_types":
            catalog = self.catalog
            if all(catalog.get(str(k)) == str(v) for k, v in data.items()):
                return
            catalog.update({str(k): str(v) for k, v in data.items()})
            self._new_names([str(k).lower() for k in data])
            self._t_catalog += 1
            self._v_reads += 1
        elif "variants" in data and "product_id" in data:
            key = str(data["product_id"])
            if self.products.get(key) == data:
                return  # read again, unchanged
            self.products[key] = data
            self._v_writes += 1
        elif "order_id" in data and "items" in data:
            key = str(data["order_id"])
            self.order_ids[key] = True
            if isinstance(data.get("user_id"), str):
                self.user_ids[data["user_id"]] = True
            self._new_names([str(it.get("name", "")).lower() for it in data["items"] if isinstance(it, dict)])
            if self.orders.get(key) == data:
                return
            self.orders[key] = data
            self._t_orders += 1
            self._v_reads += 1
            self._v_writes += 1
        elif "user_id" in data and "payment_methods" in data:
            for oid in data.get("orders") or ():
                self.order_ids[str(oid)] = True
            key = str(data["user_id"])
            if self.users.get(key) == data:
                return
            self.users[key] = data
            self._v_reads += 1
            self._v_writes += 1

    # ------------------------------------------------------------------ listing
    def _call(self, name: str, args: Mapping[str, Any]) -> str:
        """``tool_call(name, **args)``, built once per episode for each distinct call."""
        key = (name, *((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))
        text = self._strings.get(key)
        if text is None:
            text = self._strings[key] = _str_call(name, **args)
        return text

    def actions(self) -> list[str]:
        """The admissible actions now (see the module docstring for the order and the cut)."""
        if self._b_reads != self._v_reads:
            reads = self._reads()
            if reads != self._reads_list:  # a group rebuilt equal stays the same list
                self._reads_list = reads
            self._b_reads = self._v_reads
        if self._b_writes != self._v_writes:
            writes = self._write_candidates()
            if writes != self._writes:  # the same candidates (compared by identity first)
                self._writes = writes
                proposals = list(dict.fromkeys([w[2] for w in writes]))
                if proposals != self._proposals:
                    self._proposals = proposals
            self._messages()
            self._b_writes = self._v_writes
        if self._answers_for is not self.latest:
            answers = self._answers()
            if answers != self._answer_list:
                self._answer_list = answers
            self._answers_for = self.latest
        # The list is built from these; when none changed, it is the last one again. The groups
        # never share an action (each has its own text or tool names), and each holds no duplicate,
        # so joining them is de-duplicating them.
        messages, reads, answers, proposals = self._message_list, self._reads_list, self._answer_list, self._proposals
        last = self._listed
        if not (
            last
            and last[0] is reads
            and last[1] is messages
            and last[2] is proposals
            and last[3] is answers
            and last[4] == self.accepted
            and (not self.accepted or last[5] is self._writes)
        ):
            if self.accepted:
                out = [*messages, *dict.fromkeys(self._accepted(self._writes)), *reads, *answers, *proposals]
            else:
                out = [*messages, *reads, *answers, *proposals]
            if len(out) > self.max_actions:
                del out[self.max_actions :]
            self._list = out
            self._listed = (reads, messages, proposals, answers, self.accepted, self._writes)
        return self._list[:]

    def _messages(self) -> list[str]:
        key = (not self.authenticated, len(self.orders))  # orders only grow
        if key == self._messages_key:
            return self._message_list
        out = [say(ASK_IDENTITY)] if key[0] else []
        out += [say(ANYTHING_ELSE), say(REFUSE)]
        refusals = self._refusals
        for oid in self.orders:
            text = refusals.get(oid)
            if text is None:
                text = refusals[oid] = say(
                    f"I'm sorry, but I cannot do that for order {oid}: our policy does not allow it."
                )
            out.append(text)
        out.append(say(GOODBYE))
        self._messages_key = key
        self._message_list = out
        return out

    def _read_group(self, tool: str, seen: Mapping[Any, bool]) -> list[str]:
        """The read calls of ``tool`` for each key of ``seen`` (an ordered set that only grows),
        building only those of the keys added since the last call."""
        calls, done = self._read_calls[tool]
        if done[0] < len(seen):
            for key in itertools.islice(seen, done[0], None):
                if tool == "find_user_id_by_email":
                    calls.append(_read_call(tool, "email", key))
                elif tool == "find_user_id_by_name_zip":
                    calls.append(_str_call(tool, first_name=key[0], last_name=key[1], zip=key[2]))
                elif tool == "get_user_details":
                    calls.append(_read_call(tool, "user_id", key))
                else:  # get_order_details
                    calls.append(_read_call(tool, "order_id", key))
                    if self.near_misses:
                        calls.append(_read_call(tool, "order_id", key.lstrip("#")))
            done[0] = len(seen)
        return calls

    def _reads(self) -> list[str]:
        out = []
        for tool, seen in self._read_sets:
            if seen:
                calls, done = self._read_calls[tool]
                out += calls if done[0] == len(seen) else self._read_group(tool, seen)
        if "get_product_details" in self.schemas and (self.orders or self.catalog):
            reads = self._product_reads
            for p in self._product_ids():
                text = reads.get(p)
                if text is None:
                    text = reads[p] = _read_call("get_product_details", "product_id", p)
                out.append(text)
        out += self._constant_reads
        # Each group holds distinct keys, so distinct calls, but for the order ids without '#'.
        return list(dict.fromkeys(out)) if self.near_misses else out

    def _product_ids(self) -> list[str]:
        """Products worth reading: those the customer named (of read orders' items or the catalog),
        then the other products of read orders; every catalog product when none was named."""
        if not self.orders and not self.catalog:
            return []  # nothing to name, nothing to read
        text = self._lower
        key = (self._t_orders, self._t_catalog, len(text))  # text only grows
        if key == self._products_named[0]:
            return self._products_named[1]
        version, items = self._items
        if version != self._t_orders:
            items = [
                (str(it.get("name", "")).lower(), str(it.get("product_id", "")))
                for o in self.orders.values()
                for it in o.get("items") or ()
                if isinstance(it, dict)
            ]
            self._items = (self._t_orders, items)
        version, catalog = self._catalog_lower
        if version != self._t_catalog:
            catalog = [(name.lower(), pid) for name, pid in self.catalog.items()]
            self._catalog_lower = (self._t_catalog, catalog)
        # Whether each name is in the text, remembered: -1 when it is (the text only grows), else the
        # length of the text it is not in. The text grows by "\n" + a message, so a name without
        # "\n" that is in it now but was not then lies wholly in what was added.
        upto = self._said_upto
        size = len(text)
        named = []
        for name, pid in itertools.chain(items, catalog):
            if not name:
                continue
            checked = upto.get(name, 0)
            if checked < 0:
                named.append(pid)
            elif checked != size:
                if text.find(name, checked if "\n" not in name else 0) >= 0:
                    upto[name] = -1
                    named.append(pid)
                else:
                    upto[name] = size
        if not named and self.catalog:
            named = list(self.catalog.values())
        found = dict.fromkeys(named)
        found.update(dict.fromkeys([pid for _, pid in items]))
        found.pop("", None)  # every id is a str: "" is the only one that is false
        out = list(found)
        if out == self._products_named[1]:
            out = self._products_named[1]
        self._products_named = (key, out)
        return out

    def _answers(self) -> list[str]:
        if self.latest is None or type(data := self.latest[1]) is not dict:
            return []
        amounts: list[float] = []
        if isinstance(data.get("items"), list):
            prices = [
                it["price"]
                for it in data["items"]
                if isinstance(it, dict) and isinstance(it.get("price"), (int, float))
            ]
            if prices:
                amounts.append(sum(prices))
                amounts += prices
                if self.near_misses:
                    amounts += [sum(prices) - p for p in prices]
        elif isinstance(data.get("variants"), dict):
            variants = [
                v for v in data["variants"].values() if isinstance(v, dict) and isinstance(v.get("price"), (int, float))
            ]
            available = [v["price"] for v in variants if v.get("available")]
            if available:
                amounts += [min(available), max(available)]
            if variants:
                amounts.append(min(v["price"] for v in variants))
        if not amounts:
            return []
        texts = _AMOUNTS
        out = []
        for x in amounts:
            text = texts.get(x) if x else None  # a zero may be -0.0, written with its sign
            if text is None:
                text = say(f"The amount is ${x:,.2f}.")
                if x and len(texts) < 65536:
                    texts[x] = text
            out.append(text)
        return _unique(out)

    # ------------------------------------------------------------------ writes
    def _payment_methods(self, order: Mapping[str, Any]) -> list[str]:
        """The order's original method, then gift cards of users read."""
        history = order.get("payment_history") or []
        out = [str(history[0]["payment_method_id"])] if history and isinstance(history[0], dict) else []
        uid = order.get("user_id")
        user = self.users.get(uid) if isinstance(uid, str) else None
        if user is not None:
            out += [
                k
                for k, v in (user.get("payment_methods") or {}).items()
                if isinstance(v, dict) and v.get("source") == "gift_card"
            ]
        return _unique(out)

    def _open_orders(self) -> list[str]:
        """Orders a pending-only write may target: named by the customer and not read as
        non-pending, then read as pending (the same list object while it holds the same ids)."""
        key = (len(self.named_orders), self._t_orders)  # named orders only grow
        if key == self._open[0]:
            return self._open[1]
        orders = self.orders
        named = [
            oid for oid in self.named_orders if oid not in orders or orders[oid].get("status") in (None, "pending")
        ]
        out = _unique([*named, *(oid for oid, o in orders.items() if o.get("status") == "pending")])
        if out == self._open[1]:
            out = self._open[1]
        self._open = (key, out)
        return out

    def _candidate(self, key: tuple | None, name: str, args: dict[str, Any]) -> list:
        """The write candidate ``[name, args, proposal]`` (and the call, once needed), built once per
        episode for each ``key`` (the strings that make ``args``; None when a value is not a string)."""
        found = None if key is None else self._candidates.get(key)
        if found is None:
            found = [name, args, say(propose(name, args))]
            if key is not None:
                self._candidates[key] = found
        return found

    def _write_candidates(self) -> list[list]:
        candidate = self._candidate
        open_orders = self._open_orders()
        last_key, by_address = self._by_address
        if not (
            last_key[0] is open_orders and last_key[1] == len(self.addresses) and last_key[2] == self.authenticated
        ):  # addresses only grow
            by_address = []
            if "cancel_pending_order" in self.schemas:
                reasons = self.schemas["cancel_pending_order"].get("parameters", {}).get("properties", {}).get(
                    "reason", {}
                ).get("enum") or ["no longer needed", "ordered by mistake"]
                candidates = self._candidates
                for oid in open_orders:
                    for r in reasons:
                        if type(r) is not str:
                            by_address.append(candidate(None, "cancel_pending_order", {"order_id": oid, "reason": r}))
                            continue
                        found = candidates.get(("cancel_pending_order", oid, r))
                        if found is None:  # propose(), written out
                            found = candidates[("cancel_pending_order", oid, r)] = [
                                "cancel_pending_order",
                                {"order_id": oid, "reason": r},
                                say(f"To confirm, I will cancel order {oid} with reason '{r}'. Shall I proceed?"),
                            ]
                        by_address.append(found)
            for address in self.addresses:
                addr = dict(address)
                if "modify_pending_order_address" in self.schemas:
                    by_address += [
                        candidate(
                            ("modify_pending_order_address", oid, address),
                            "modify_pending_order_address",
                            {"order_id": oid, **addr},
                        )
                        for oid in open_orders
                    ]
                if "modify_user_address" in self.schemas and self.authenticated:
                    by_address.append(
                        candidate(
                            ("modify_user_address", self.authenticated, address),
                            "modify_user_address",
                            {"user_id": self.authenticated, **addr},
                        )
                    )
            self._by_address = ((open_orders, len(self.addresses), self.authenticated), by_address)
        if not self.orders:
            return by_address
        out = by_address[:]
        for oid, order in self.orders.items():
            out += self._order_writes(oid, order)
        return out

    def _order_writes(self, oid: str, order: Mapping[str, Any]) -> list[list]:
        """The write candidates on the items and payment of one order read; rebuilt only when the
        order, a user or product read, or what the customer said about the order changed."""
        text = self._about(oid)
        prepared = self._order_items.get(oid)
        if prepared is None or prepared[0] is not order:
            items = [it for it in order.get("items") or () if isinstance(it, dict) and "item_id" in it]
            prepared = self._order_items[oid] = (order, items, [str(it.get("product_id")) for it in items])
        _, items, product_ids = prepared
        uid = order.get("user_id", "")
        # What the writes read besides the order and the text: its user (see _payment_methods and
        # _user_methods) and its items' products (see _swaps).
        products = self.products
        key = (
            self.users.get(uid) if isinstance(uid, str) else None,
            [products.get(p) for p in product_ids] if products else None,
            text,
        )
        cached = self._by_order.get(oid)
        if cached is not None and cached[0] is order and cached[1] == key:
            return cached[2]
        out: list[list] = []
        if items:
            status = order.get("status")
            has = self.schemas
            uses_methods = (
                status == "delivered"
                and ("return_delivered_order_items" in has or "exchange_delivered_order_items" in has)
                or status == "pending"
                and ("modify_pending_order_items" in has or "modify_pending_order_payment" in has)
            )
            methods = self._payment_methods(order) if uses_methods else []
            if status == "delivered" and "return_delivered_order_items" in has:
                candidates = self._candidates
                for ids in self._item_sets(items, text):
                    t = tuple(ids)
                    for pm in methods:
                        found = candidates.get(("return_delivered_order_items", oid, t, pm))
                        if found is None:  # propose(), written out
                            found = candidates[("return_delivered_order_items", oid, t, pm)] = [
                                "return_delivered_order_items",
                                {"order_id": oid, "item_ids": ids, "payment_method_id": pm},
                                say(
                                    f"To confirm, I will return items {', '.join(map(str, ids))} from order {oid}, "
                                    f"refunding to {pm}. Shall I proceed?"
                                ),
                            ]
                        out.append(found)
            if products:
                for tool, wanted in _SWAPS.items():
                    if status == wanted and tool in has:
                        out += self._swaps(tool, oid, methods[:1], items, text)
            if status == "pending" and "modify_pending_order_payment" in has:
                current = methods[:1]
                out += [
                    self._candidate(
                        ("modify_pending_order_payment", oid, pm) if type(pm) is str else None,
                        "modify_pending_order_payment",
                        {"order_id": oid, "payment_method_id": pm},
                    )
                    for pm in self._user_methods(order)
                    if pm not in current
                ]
        self._by_order[oid] = (order, key, out)
        return out

    def _about(self, oid: str) -> str:
        """What the customer said about an order: their sentences naming it (lower case), else everything."""
        said_count = len(self._said)
        cached = self._abouts.get(oid)
        if cached is not None and cached[0] == said_count:  # no customer message since
            return cached[1]
        key = oid.lstrip("#").lower()
        said = []
        for i, message in enumerate(self._said):
            if key in message:  # a sentence naming it is in a message naming it
                sentences = self._sentences.get(i)
                if sentences is None:
                    sentences = self._sentences[i] = _SENTENCE.split(message)
                said += [t for t in sentences if key in t]
        text = " ".join(said) if said else self._lower
        self._abouts[oid] = (said_count, text)
        return text

    def _user_methods(self, order: Mapping[str, Any]) -> list[str]:
        user = self.users.get(order.get("user_id", ""))
        return list((user or {}).get("payment_methods") or ())

    @staticmethod
    def _item_sets(items: list[Mapping[str, Any]], text: str) -> list[list[str]]:
        """Each item alone, all items, the items the customer named (in ``text``), and the rest."""
        ids = [str(it["item_id"]) for it in items]
        named = sorted(str(it["item_id"]) for it in items if str(it.get("name", "")).lower() in text)
        rest = sorted(set(ids) - set(named))
        sets = [[i] for i in ids] + [sorted(ids)] + [s for s in (named, rest) if s]
        return [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]

    def _swaps(self, tool: str, oid: str, pm: list[str], items: list[Mapping[str, Any]], text: str) -> list[list]:
        """Swaps of one item of order ``oid`` for another variant, settled with ``pm`` (the original
        method, if known); ``text`` is what the customer said about the order."""
        out: list[list] = []
        if not pm:
            return out
        for it in items:
            product = self.products.get(str(it.get("product_id")))
            if product is None or str(it.get("name", "")).lower() not in text:
                continue
            item_id = str(it["item_id"])
            candidates = self._candidates
            for new in self._variant_choices_of(product, item_id, text):
                found = candidates.get((tool, oid, item_id, new, pm[0]))
                if found is None:  # propose(), written out
                    found = candidates[(tool, oid, item_id, new, pm[0])] = [
                        tool,
                        {"order_id": oid, "item_ids": [item_id], "new_item_ids": [new], "payment_method_id": pm[0]},
                        say(
                            f"To confirm, I will {'exchange' if tool.startswith('exchange') else 'modify'} items "
                            f"{item_id} in order {oid} for items {new}, settling any difference with {pm[0]}. "
                            "Shall I proceed?"
                        ),
                    ]
                out.append(found)
        return out

    def _variant_choices_of(self, product: Mapping[str, Any], current: str, text: str) -> list[str]:
        """:meth:`_variant_choices`, from the product's variants prepared once per product record."""
        prepared = self._variants.get(id(product))
        if prepared is None or prepared[0] is not product:
            try:
                variants = [
                    (v, [(k, val, f"{k} {val}".lower()) for k, val in v["options"].items()])
                    for v in (product.get("variants") or {}).values()
                    if isinstance(v, dict) and isinstance(v.get("options"), dict)
                ]
                # Sorted with the current item too: dropping it later leaves the same order.
                available = sorted(
                    (x for x in variants if x[0].get("available")),
                    key=lambda x: (x[0].get("price", 0), x[0]["item_id"]),
                )
            except (KeyError, TypeError):  # a malformed record: as the plain version does it
                return self._variant_choices(product, current, text)
            words = list(dict.fromkeys(words for _, options in variants for _, _, words in options))
            prepared = self._variants[id(product)] = (product, variants, available, words)
        _, variants, available, words = prepared
        said = {w: w in text for w in words}  # option text -> whether the customer said it
        exact = [
            v["item_id"]
            for v, options in variants
            if v.get("item_id") != current and all(said[words] for _, _, words in options)
        ]
        available = [x for x in available if x[0].get("item_id") != current]
        cheapest_with = []
        taken: set = set()  # the (option, value) pairs of cheapest_with
        for v, options in available:
            for k, val, words in options:
                if said[words] and (k, val) not in taken:
                    cheapest_with.append(v["item_id"])
                    taken.add((k, val))
        choices = exact + cheapest_with + [v["item_id"] for v, _ in available[:1]]
        return _unique(str(c) for c in choices)

    @staticmethod
    def _variant_choices(product: Mapping[str, Any], current: str, text: str) -> list[str]:
        """The variant whose options the customer named, the cheapest available with each named
        option value, and the cheapest available."""
        variants = [
            v
            for v in (product.get("variants") or {}).values()
            if isinstance(v, dict) and v.get("item_id") != current and isinstance(v.get("options"), dict)
        ]
        available = sorted((v for v in variants if v.get("available")), key=lambda v: (v.get("price", 0), v["item_id"]))
        exact = [v["item_id"] for v in variants if all(f"{k} {val}".lower() in text for k, val in v["options"].items())]
        cheapest_with = []
        for v in available:
            for k, val in v["options"].items():
                if f"{k} {val}".lower() in text and (k, val) not in {kv for kv, _ in cheapest_with}:
                    cheapest_with.append(((k, val), v["item_id"]))
        choices = exact + [i for _, i in cheapest_with] + [v["item_id"] for v in available[:1]]
        return _unique(str(c) for c in choices)

    def _accepted(self, writes: list[list]) -> list[str]:
        said = self.accepted.lower()
        out = []
        for write in writes:
            name, args = write[0], write[1]
            if _named_in(args, said):
                if len(write) == 3:
                    write.append(self._call(name, args))
                out.append(write[3])
                if self.near_misses:
                    out += [self._call(name, twin) for twin in self._twins(name, args, writes)]
        return out

    def _twins(self, name: str, args: dict[str, Any], writes: list[list]) -> list[dict[str, Any]]:
        """The same write with a typical mistake: an id without '#', a list as a string, a zip as
        a number, another record of the same kind."""
        twins = []
        if str(args.get("order_id", "")).startswith("#"):
            twins.append({**args, "order_id": args["order_id"][1:]})
        for key in ("item_ids", "new_item_ids"):
            if isinstance(args.get(key), list):
                twins.append({**args, key: ",".join(args[key])})
        if str(args.get("zip", "")).isdigit():
            twins.append({**args, "zip": int(args["zip"])})
        for other_name, other, *_ in writes:  # another record next to the right one
            if (
                other_name == name
                and other.get("order_id") == args.get("order_id")
                and other != args
                and other.get("payment_method_id") == args.get("payment_method_id")
                and "item_ids" in args
            ):
                twins.append(other)
        return twins


def admissible_actions(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    *,
    near_misses: bool = False,
    max_actions: int = 128,
) -> list[str]:
    """The admissible actions after ``messages`` (``info["messages"]``) with ``tools`` (``info["tools"]``).

    For a loop over one episode, keep an :class:`AdmissibleActions` and call its
    :meth:`~AdmissibleActions.update` each step instead: it reads only the new messages.
    """
    return AdmissibleActions(tools, near_misses=near_misses, max_actions=max_actions).update(messages)
