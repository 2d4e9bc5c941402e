"""One slot per pytest session, held by a file lock, so sessions running side by side on one machine
(two engineers, xdist workers) never share a bridge, subnet, netns name or state directory.

A slot found free with leftovers (its holder died without teardown) is cleared before reuse: the
lock proves nobody owns them any more.
"""

from __future__ import annotations

import fcntl
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.infra import net
from tests.infra.process import kill_stale_processes, unmount_under

LOCK_DIR = Path("/run/sparkprov-test")
MAX_SLOTS = 16


@dataclass
class Slot:
    """Names and addresses reserved for one session; slot 0 uses bridge spbr0 and 10.200.0.0/24."""

    index: int
    lock: IO[str]

    @property
    def dir(self) -> Path:
        """State directory; short on purpose, unix socket paths are limited to 108 bytes."""
        return Path(f"/tmp/spt{self.index}")

    @property
    def fleet_bridge(self) -> str:
        return f"spbr{self.index}"

    @property
    def fleet_subnet(self) -> str:
        """First three octets of the fleet's /24; the bridge is .1, hosts start at .11."""
        return f"10.200.{self.index}"

    @property
    def netns_prefix(self) -> str:
        return f"sp{self.index}-"

    @property
    def docker_bridge(self) -> str:
        return f"spdk{self.index}"

    @property
    def docker_bridge_cidr(self) -> str:
        return f"10.201.{self.index}.1/24"

    @property
    def docker_pool_prefix(self) -> str:
        """Subnets of user-defined (compose) networks start with this; disjoint between slots."""
        return f"10.{210 + self.index}."

    @property
    def docker_address_pool(self) -> str:
        return f"base={self.docker_pool_prefix}0.0/16,size=24"


def acquire_slot() -> Slot:
    """Lock the first free slot and clear whatever a dead previous holder left in it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for index in range(MAX_SLOTS):
        lock = (LOCK_DIR / f"slot{index}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        slot = Slot(index, lock)
        clear_slot(slot)
        slot.dir.mkdir(mode=0o700)
        return slot
    raise RuntimeError(f"all {MAX_SLOTS} test-infra slots under {LOCK_DIR} are held by other sessions")


def clear_slot(slot: Slot) -> None:
    """Remove every trace of the slot's components; safe to call when they are already gone."""
    if slot.dir.exists():
        kill_stale_processes(slot.dir)
    net.delete_links(net.links_with_prefix(slot.netns_prefix))
    net.delete_netns(net.netns_with_prefix(slot.netns_prefix))
    net.remove_forwarding(slot.fleet_bridge)
    for bridge in (slot.fleet_bridge, slot.docker_bridge):
        net.delete_link(bridge)
    net.delete_links(net.links_in_subnet(slot.docker_pool_prefix))
    if slot.dir.exists():
        unmount_under(slot.dir)
        shutil.rmtree(slot.dir)


def release_slot(slot: Slot) -> None:
    if slot.lock.closed:
        return
    clear_slot(slot)
    slot.lock.close()  # closing the file drops the flock
