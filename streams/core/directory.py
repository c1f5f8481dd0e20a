"""The customer directory: records by id, plus an index by area and network node.

The records live in any mutable mapping: a plain dict in the simulator, a faust
table in the worker. The index is derived state and is rebuilt from the records
whenever the mapping was filled behind its back (table recovery).

Each customer belongs to one partition, ``owner_partition(id)``; the worker
routes a customer's events to that partition, and an outage is handed to every
partition, which answers only for the customers it owns.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

Customer = dict[str, Any]


def owner_partition(customer_id: str, partitions: int) -> int:
    return zlib.crc32(customer_id.encode("utf-8")) % partitions


def area_keys(postcode: str) -> tuple[str, str]:
    """The index keys for a postcode: its PC4 and PC6 forms ("1012", "1012AB")."""
    compact = postcode.replace(" ", "").upper()
    return compact[:4], compact


class CustomerDirectory:
    def __init__(self, records: MutableMapping[str, Customer] | None = None):
        self.records: MutableMapping[str, Customer] = records if records is not None else {}
        self._by_area: dict[str, set[str]] = defaultdict(set)
        self._by_node: dict[str, set[str]] = defaultdict(set)
        self.rebuild_index()

    def __len__(self) -> int:
        return len(self.records)

    def get(self, customer_id: str | None) -> Customer | None:
        if customer_id is None:
            return None
        return self.records.get(customer_id)

    def upsert(self, customer: Customer) -> None:
        old = self.records.get(customer["id"])
        if old is not None:
            self._unindex(old)
        self.records[customer["id"]] = customer
        self._index(customer)

    def delete(self, customer_id: str) -> None:
        old = self.records.get(customer_id)
        if old is not None:
            self._unindex(old)
            del self.records[customer_id]

    def rebuild_index(self) -> None:
        self._by_area.clear()
        self._by_node.clear()
        for customer in self.records.values():
            self._index(customer)

    def affected(self, areas: Iterable[str], nodes: Iterable[str] = (),
                 partition: int | None = None, partitions: int = 1) -> Iterator[Customer]:
        """Customers in any of the postcode prefixes or on any of the nodes, each once.

        With ``partition`` set, only the customers that partition owns.
        """
        ids: set[str] = set()
        for area in areas:
            ids |= self._by_area.get(area.replace(" ", "").upper(), set())
        for node in nodes:
            ids |= self._by_node.get(node, set())
        for customer_id in sorted(ids):
            if partition is not None and owner_partition(customer_id, partitions) != partition:
                continue
            customer = self.records.get(customer_id)
            if customer is not None:
                yield customer

    def _index(self, customer: Customer) -> None:
        for key in area_keys(customer.get("postcode", "")):
            if key:
                self._by_area[key].add(customer["id"])
        if customer.get("node_id"):
            self._by_node[customer["node_id"]].add(customer["id"])

    def _unindex(self, customer: Customer) -> None:
        for key in area_keys(customer.get("postcode", "")):
            self._by_area.get(key, set()).discard(customer["id"])
        if customer.get("node_id"):
            self._by_node.get(customer["node_id"], set()).discard(customer["id"])
