"""Virtual IPs: one per service from the service CIDR, held in etcd for the service's life.

`vips/ADDRESS` names the service holding the address. A service's record
and its VIP key are written in one transaction that compares the VIP key
absent, so two services never get the same address; the service
controller deletes the key with the service.

Addresses are chosen at random, not lowest-first: concurrent creates (on one
replica or several) then almost never pick the same address, so they do not
queue behind each other's retries, and no scan of every held address is
needed. A random probe is taken when it is free, which it is with the
probability of the CIDR's free share (85% with 10,000 services in a /16);
only when a few probes in a row hit held addresses (a nearly full CIDR) is
the `vips/` prefix scanned to pick at random among the free ones. A block
per replica would also avoid contention, but it needs block bookkeeping and
strands addresses when replicas come and go; a random start needs none.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable

from berth.errors import FailedPrecondition
from controlplane.store import Condition, Put, StoreAPI, keys

# Probes of single addresses before scanning for the free ones.
PROBES = 8
# Largest CIDR (in addresses) whose free addresses are ever listed.
SCAN_AT_MOST = 1 << 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def usable_range(network: Network) -> tuple[int, int]:
    """First and last address (as integers) a VIP may take.

    The network address, the first host (left out, as a gateway would be)
    and, in IPv4, the broadcast address are never given out.
    """
    first = int(network.network_address) + 2
    last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
    return first, last


def random_address(network: Network, rng: random.Random) -> str | None:
    first, last = usable_range(network)
    if first > last:
        return None
    return str(ipaddress.ip_address(rng.randint(first, last)))


def free_addresses(network: Network, taken: Iterable[str]) -> list[str]:
    """Every usable address of the network that is not taken (for small or nearly full CIDRs)."""
    first, last = usable_range(network)
    used = {int(ipaddress.ip_address(t)) for t in taken}
    return [str(ipaddress.ip_address(a)) for a in range(first, last + 1) if a not in used]


class VipAllocator:
    def __init__(self, store: StoreAPI, cidr: str, rng: random.Random | None = None) -> None:
        self._store = store
        self.cidr = cidr
        self._network: Network = ipaddress.ip_network(cidr)
        self._rng = rng or random.Random()

    async def candidate(self) -> str:
        """A random address no service holds now (claim it to keep it)."""
        for _ in range(PROBES):
            address = random_address(self._network, self._rng)
            if address is None:
                break
            if await self._store.get_raw(keys.vip(address)) is None:
                return address
        first, last = usable_range(self._network)
        if last - first > SCAN_AT_MOST:
            # Far too large to be nearly full: the probes were just unlucky.
            raise FailedPrecondition(f"no free virtual IP found in {PROBES} tries in {self.cidr}; try again")
        entries, _ = await self._store.scan_raw(keys.VIPS)
        free = free_addresses(self._network, (e.key.removeprefix(keys.VIPS) for e in entries))
        if not free:
            raise FailedPrecondition(
                f"the service CIDR {self.cidr} has no free virtual IP left: delete services "
                "or start the control plane with a larger --service-cidr"
            )
        return self._rng.choice(free)

    @staticmethod
    def claim(address: str, cluster: str, service: str) -> tuple[Put, Condition]:
        """The write and condition that take `address` for the service in its create transaction."""
        key = keys.vip(address)
        return Put(key, f"{cluster}/{service}".encode()), Condition(key, 0)
