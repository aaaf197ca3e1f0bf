"""Virtual IPs: one per service from the service CIDR, held in etcd for the service's life.

`vips/ADDRESS` names the service holding the address. A service's record
and its VIP key are written in one transaction that compares the VIP key
absent, so two services never get the same address; the service
controller deletes the key with the service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from berth.errors import FailedPrecondition
from controlplane.store import Condition, Put, StoreAPI, keys


def lowest_free(cidr: str, taken: Iterable[str]) -> str:
    """The lowest free address of the CIDR (the first one is left out, as a gateway would be)."""
    network = ipaddress.ip_network(cidr)
    used = set(taken)
    for index, address in enumerate(network.hosts()):
        if index == 0:
            continue
        if str(address) not in used:
            return str(address)
    raise FailedPrecondition(f"the service CIDR {cidr} has no free virtual IP left")


class VipAllocator:
    def __init__(self, store: StoreAPI, cidr: str) -> None:
        self._store = store
        self.cidr = cidr

    async def candidate(self) -> str:
        """The lowest address no service holds now (claim it to keep it)."""
        taken, _ = await self._store.scan_raw(keys.VIPS)
        return lowest_free(self.cidr, (entry.key.removeprefix(keys.VIPS) for entry in taken))

    @staticmethod
    def claim(address: str, cluster: str, service: str) -> tuple[Put, Condition]:
        """The write and condition that take `address` for the service in its create transaction."""
        key = keys.vip(address)
        return Put(key, f"{cluster}/{service}".encode()), Condition(key, 0)
