"""A memory bound on what the Scan tab keeps for its sessions.

A segmented scan stays in its session's ``gr.State`` so the page can re-draw, edit, click and review
it: the scan, the model's masks and float16 probabilities, the corrected masks, any ground truth
and the slices its undo steps hold (13 to 16 bytes a voxel, so hundreds of MB for the largest scan allowed). Gradio
keeps a session's state for its time to live (an hour) even after the tab is closed, and every new
API client is a new session, so without a bound a few people with large scans would exhaust the
server's memory within the hour.

:class:`KeptScans` holds the scans' bytes to a budget: when a new scan would go over it, the scans
used longest ago are released (their holders drop their arrays) and their sessions' next action says
so in one line. The scan just segmented is always kept, and so is any scan used in the last two
minutes (a request is never left without its scan half-way).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

#: The budget, in MiB: ``UWMGI_KEPT_SCANS_MB`` (default 4096).
DEFAULT_BUDGET_MB = 4096

#: What a session whose scan was released reads.
RELEASED = ("This scan was released to keep the server's memory bounded (it keeps the most recently used "
            "scans); segment it again.")


@dataclass
class _Entry:
    holders: list[weakref.ref]
    nbytes: int
    used: float  # time.monotonic() of the last use
    extra: dict[int, tuple[weakref.ref, int]] = field(default_factory=dict)  # attached holders' own bytes

    def alive(self) -> bool:
        return any(h() is not None for h in self.holders)

    def total(self) -> int:
        """The scan's bytes and those its living attached holders (undo points) hold besides."""
        return self.nbytes + sum(n for ref, n in self.extra.values() if ref() is not None)


class KeptScans:
    """Scans' bytes, by token, most recently used last; over ``budget_bytes`` the oldest are released.

    A *holder* is any object with a ``release()`` method that drops its references to a scan's arrays
    (the tab's state, an undo point). Holders are held weakly: a session Gradio has forgotten costs
    nothing here. A scan used within the last ``grace_s`` seconds is never released, so no request
    loses its scan while it runs (the budget may be exceeded for that long).
    """

    def __init__(self, budget_bytes: int, grace_s: float = 120.0):
        self.budget_bytes, self.grace_s = int(budget_bytes), grace_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, token: str, holder, nbytes: int) -> None:
        """``holder`` now holds scan ``token`` (``nbytes`` in all), the most recently used one; release the
        scans used longest ago while the total is over the budget (never this one, nor one in its grace time)."""
        released = []
        now = time.monotonic()
        with self._lock:
            entry = self._entries.pop(token, None)
            holders = [h for h in entry.holders if h() is not None] if entry else []
            extra = {k: v for k, v in entry.extra.items() if v[0]() is not None} if entry else {}
            self._entries[token] = _Entry([*holders, weakref.ref(holder)], int(nbytes), now, extra)
            for dead in [t for t, e in self._entries.items() if not e.alive()]:  # sessions Gradio forgot
                del self._entries[dead]
            total = sum(e.total() for e in self._entries.values())
            while len(self._entries) > 1 and total > self.budget_bytes:
                oldest = next(iter(self._entries.values()))
                if now - oldest.used < self.grace_s:
                    break
                _, gone = self._entries.popitem(last=False)
                total -= gone.total()
                released += [h() for h in gone.holders]
        for holder in released:  # outside the lock: a release may free hundreds of MB
            if holder is not None:
                holder.release()

    def attach(self, token: str, holder, nbytes: int = 0) -> None:
        """``holder`` also holds some of scan ``token``'s arrays, and ``nbytes`` of its own (an undo point's
        masks), counted while it lives: released with the scan; at once for a scan not kept."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                ref = weakref.ref(holder)
                entry.holders.append(ref)
                if nbytes:
                    entry.extra[id(holder)] = (ref, int(nbytes))
        if entry is None:
            holder.release()

    def touch(self, token: str) -> None:
        """Scan ``token`` was just used: the last to be released."""
        with self._lock:
            if token in self._entries:
                self._entries.move_to_end(token)
                self._entries[token].used = time.monotonic()

    def total_bytes(self) -> int:
        """The kept scans' bytes (those whose holders Gradio has forgotten do not count)."""
        with self._lock:
            return sum(e.total() for e in self._entries.values() if e.alive())

    def __contains__(self, token: str) -> bool:
        return token in self._entries


def array_bytes(*objects) -> int:
    """The bytes of the numpy arrays among ``objects`` and their attributes (one level down), each array once."""
    seen: dict[int, int] = {}
    for obj in objects:
        for value in (obj, *(vars(obj).values() if hasattr(obj, "__dict__") else ())):
            if isinstance(value, np.ndarray):
                seen[id(value)] = value.nbytes
    return sum(seen.values())


def budget_from_environment() -> int:
    """``UWMGI_KEPT_SCANS_MB`` (default :data:`DEFAULT_BUDGET_MB`) in bytes."""
    return int(float(os.environ.get("UWMGI_KEPT_SCANS_MB", DEFAULT_BUDGET_MB)) * 2**20)
