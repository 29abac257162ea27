"""Each endpoint's learned request window: the widest block range it answers eth_getLogs for.

Providers cap ranges (a fixed number of blocks) or results (a number of logs, so the workable
range depends on how busy the chain was). The window shrinks to what the provider said or what
worked, grows back slowly after successes, and now and then probes above a known range cap in
case it was lifted. The worker claims tasks no wider than the window, so one endpoint's small
limit never shrinks the tasks other endpoints take.
"""

from __future__ import annotations

import threading

GROW_AFTER = 8  # successes at the full window before it grows
GROWTH = 1.25
PROBE_AFTER = 50  # successes at a known range cap before trying above it


class RangeWindow:
    """Max blocks per request for one endpoint (None: no limit known)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.ceiling = limit  # a range cap: widths above it failed with "range too large"
        self._lock = threading.Lock()
        self._streak = 0

    def shrink(self, width: int, fits: int, range_cap: bool) -> None:
        """A request `width` blocks wide was refused; `fits` blocks should work. A range cap
        (as opposed to a result cap) is also remembered as a ceiling."""
        with self._lock:
            fits = max(1, min(fits, width - 1 if width > 1 else 1))
            self.limit = fits if self.limit is None else min(self.limit, fits)
            if range_cap:
                self.ceiling = fits if self.ceiling is None else min(self.ceiling, fits)
            self._streak = 0

    def succeeded(self, width: int) -> None:
        """A request `width` blocks wide worked; widen the window after a run of full ones."""
        with self._lock:
            if self.limit is None or width < self.limit:
                return
            self._streak += 1
            at_ceiling = self.ceiling is not None and self.limit >= self.ceiling
            if at_ceiling and self._streak >= PROBE_AFTER:
                self.ceiling = max(self.ceiling + 1, int(self.ceiling * GROWTH))
            elif at_ceiling or self._streak < GROW_AFTER:
                return
            self.limit = max(self.limit + 1, int(self.limit * GROWTH))
            if self.ceiling is not None:
                self.limit = min(self.limit, self.ceiling)
            self._streak = 0
