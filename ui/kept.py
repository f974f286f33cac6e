"""A memory bound on what the Scan tab keeps for its sessions.

A segmented scan stays in its session's ``gr.State`` so the page can re-draw, edit, click and review
it: the scan, the model's masks and float16 probabilities, the corrected masks, any ground truth
(13 to 16 bytes a voxel, so hundreds of MB for the largest scan allowed). Gradio
keeps a session's state for its time to live (an hour) even after the tab is closed, and every new
API client is a new session, so without a bound a few people with large scans would exhaust the
server's memory within the hour.

:class:`KeptScans` holds the scans' bytes to a budget: when a new scan would go over it, the scans
used longest ago are released (their holders drop their arrays) and their sessions' next action says
so in one line. The scan just segmented is always kept.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

#: The budget, in MiB: ``UWMGI_KEPT_SCANS_MB`` (default 4096).
DEFAULT_BUDGET_MB = 4096

#: What a session whose scan was released reads.
RELEASED = ("This scan was released to keep the server's memory bounded (it keeps the most recently used "
            "scans); segment it again.")


class KeptScans:
    """Scans' bytes, by token, most recently used last; over ``budget_bytes`` the oldest are released.

    A *holder* is any object with a ``release()`` method that drops its references to a scan's arrays
    (the tab's state, an undo point). Holders are held weakly: a session Gradio has forgotten costs
    nothing here.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, tuple[list[weakref.ref], int]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, token: str, holder, nbytes: int) -> None:
        """``holder`` now holds scan ``token`` (``nbytes`` in all), the most recently used one; release the
        scans used longest ago while the total is over the budget (never this one)."""
        released = []
        with self._lock:
            holders, _ = self._entries.pop(token, ([], 0))
            holders = [h for h in holders if h() is not None] + [weakref.ref(holder)]
            self._entries[token] = (holders, int(nbytes))
            while len(self._entries) > 1 and self.total_bytes() > self.budget_bytes:
                _, (old, _) = self._entries.popitem(last=False)
                released += [h() for h in old]
        for holder in released:  # outside the lock: a release may free hundreds of MB
            if holder is not None:
                holder.release()

    def attach(self, token: str, holder) -> None:
        """``holder`` also holds some of scan ``token``'s arrays: released with it. Ignored for a scan not kept."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                entry[0].append(weakref.ref(holder))
        if entry is None:
            holder.release()

    def touch(self, token: str) -> None:
        """Scan ``token`` was just used: the last to be released."""
        with self._lock:
            if token in self._entries:
                self._entries.move_to_end(token)

    def total_bytes(self) -> int:
        """The kept scans' bytes (their holders may since have been forgotten by Gradio)."""
        return sum(nbytes for holders, nbytes in self._entries.values() if any(h() is not None for h in holders))

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
