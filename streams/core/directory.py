"""The customer directory: records by id, plus an index by area and network node.

Records are kept as compact JSON bytes in any mutable mapping: a dict in the
simulator, a faust table in the worker. A million customers then take a few
hundred bytes each instead of a Python dict's kilobyte.

Each customer belongs to one partition, ``owner_partition(id)``; the worker
routes a customer's events to that partition, and an outage is handed to every
partition, which answers only for the customers it owns. The index is therefore
split by partition, and within a partition by urgency: customers flagged
``critical`` (say, medical dependence on the line) first, premium customers
next, everyone else last. It is derived state, rebuilt from the records after
a table recovery.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import orjson

Customer = dict[str, Any]
CRITICAL, PREMIUM, OTHERS = 0, 1, 2


def owner_partition(customer_id: str, partitions: int) -> int:
    return zlib.crc32(customer_id.encode("utf-8")) % partitions


def area_keys(postcode: str) -> tuple[str, str]:
    """The index keys for a postcode: its PC4 and PC6 forms ("1012", "1012AB")."""
    compact = postcode.replace(" ", "").upper()
    return compact[:4], compact


def _keys(customer: Customer) -> set[str]:
    keys = {f"pc:{key}" for key in area_keys(customer.get("postcode", "")) if key}
    if customer.get("node_id"):
        keys.add(f"node:{customer['node_id']}")
    return keys


def _urgency(customer: Customer) -> int:
    if customer.get("critical"):
        return CRITICAL
    return PREMIUM if customer.get("tier") == "premium" else OTHERS


class CustomerDirectory:
    def __init__(self, records: MutableMapping[str, bytes] | None = None, partitions: int = 1):
        self.records: MutableMapping[str, bytes] = records if records is not None else {}
        self.partitions = partitions
        self._index: dict[tuple[int, int, str], set[str]] = {}
        self._phones: dict[str, str | tuple[str, ...]] = {}  # phone -> customer id(s), for an SMS STOP
        self.rebuild_index()

    def __len__(self) -> int:
        return len(self.records)

    def get(self, customer_id: str | None) -> Customer | None:
        if customer_id is None:
            return None
        raw = self.records.get(customer_id)
        return orjson.loads(raw) if raw is not None else None

    def upsert(self, customer: Customer) -> None:
        old = self.get(customer["id"])
        if old is not None:
            self._unindex(old)
        # A copy of exact size: orjson's own result keeps its 1 KiB+ work buffer behind it (4 KiB per record measured).
        self.records[customer["id"]] = bytes(memoryview(orjson.dumps(customer)))
        self._index_customer(customer)

    def delete(self, customer_id: str) -> None:
        old = self.get(customer_id)
        if old is not None:
            self._unindex(old)
            del self.records[customer_id]

    def rebuild_index(self) -> None:
        self._index.clear()
        self._phones.clear()
        for raw in self.records.values():
            self._index_customer(orjson.loads(raw))

    def affected(self, areas: Iterable[str], nodes: Iterable[str] = (),
                 partition: int | None = None) -> Iterator[Customer]:
        """Customers in any of the postcode prefixes or on any of the nodes, each once, most urgent first.

        Streams: nothing is collected, a customer found under two keys is
        recognised by its own record. With ``partition``, only that partition's.
        """
        keys = [f"pc:{area.replace(' ', '').upper()}" for area in areas] + [f"node:{node}" for node in nodes]
        first_position = {}
        for position, key in enumerate(keys):
            first_position.setdefault(key, position)
        # A customer has one PC4, one PC6 and at most one node key: asked by keys of one kind, nobody is found twice.
        one_kind = len({"node" if key.startswith("node:") else len(key) for key in first_position}) <= 1
        scanned = range(self.partitions) if partition is None else (partition,)
        for urgency in (CRITICAL, PREMIUM, OTHERS):
            for part in scanned:
                for position, key in enumerate(keys):
                    if first_position[key] != position:
                        continue  # the same key twice
                    for customer_id in sorted(self._index.get((part, urgency, key), ())):  # reproducible order
                        customer = self.get(customer_id)
                        if customer is None:
                            continue
                        if not one_kind and any(first_position.get(own, position) < position
                                                for own in _keys(customer)):
                            continue  # already yielded under an earlier key
                        yield customer

    def with_phone(self, phone: str, partition: int | None = None) -> list[str]:
        """The ids of the customers with this phone number (of ``partition`` only, if given)."""
        found = self._phones.get(phone, ())
        ids = (found,) if isinstance(found, str) else found
        return sorted(i for i in ids if partition is None or owner_partition(i, self.partitions) == partition)

    def _slot(self, customer: Customer) -> tuple[int, int]:
        return owner_partition(customer["id"], self.partitions), _urgency(customer)

    def _index_customer(self, customer: Customer) -> None:
        part, urgency = self._slot(customer)
        customer_id = customer["id"]
        for key in _keys(customer):
            self._index.setdefault((part, urgency, key), set()).add(customer_id)
        phone = customer.get("phone")
        if phone:
            held = self._phones.get(phone)
            if held is None or held == customer_id:
                self._phones[phone] = customer_id
            else:  # a shared number: a household, a business line
                ids = (held,) if isinstance(held, str) else held
                self._phones[phone] = tuple(sorted({*ids, customer_id}))

    def _unindex(self, customer: Customer) -> None:
        part, urgency = self._slot(customer)
        for key in _keys(customer):
            members = self._index.get((part, urgency, key))
            if members is not None:
                members.discard(customer["id"])
                if not members:
                    del self._index[(part, urgency, key)]
        phone = customer.get("phone")
        held = self._phones.get(phone) if phone else None
        if held is not None:
            rest = tuple(i for i in ((held,) if isinstance(held, str) else held) if i != customer["id"])
            if not rest:
                del self._phones[phone]
            else:
                self._phones[phone] = rest[0] if len(rest) == 1 else rest
