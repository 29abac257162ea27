"""Each endpoint's learned request window: the widest block range it answers eth_getLogs for.

Providers cap ranges (a fixed number of blocks) or results (a number of logs, so the workable
range depends on how busy the chain was). The window shrinks to what the provider said or what
worked. Far below the width that failed it doubles after every two successes; near that width it
grows slowly; and now and then it probes above a known range cap in case the cap was lifted.
The worker claims tasks no wider than the window, so one endpoint's small limit never shrinks the
tasks other endpoints take.
"""

from __future__ import annotations

import threading

GROW_AFTER = 8  # successes at the full window before it grows, near the width that failed
GROWTH = 1.25
FAST_GROW_AFTER = 2  # ... and far below it (under half), where it doubles
PROBE_AFTER = 50  # successes at a known range cap before trying above it


class RangeWindow:
    """Max blocks per request for one endpoint (None: no limit known)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.ceiling = limit  # a range cap: widths above it failed with "range too large"
        self._refused: int | None = None  # the latest width refused for being too big
        self._lock = threading.Lock()
        self._streak = 0

    def shrink(self, width: int, fits: int, range_cap: bool) -> None:
        """A request `width` blocks wide was refused; `fits` blocks should work. A range cap
        (as opposed to a result cap) is also remembered as a ceiling."""
        if fits <= 1 and not range_cap:
            return  # one over-full block says nothing about the width that works elsewhere
        with self._lock:
            fits = max(1, min(fits, width - 1 if width > 1 else 1))
            self.limit = fits if self.limit is None else min(self.limit, fits)
            if range_cap:
                self.ceiling = fits if self.ceiling is None else min(self.ceiling, fits)
            self._refused = width
            self._streak = 0

    def succeeded(self, width: int) -> None:
        """A request `width` blocks wide worked; widen the window after a run of full ones."""
        with self._lock:
            if self.limit is None or width < self.limit:
                return
            self._streak += 1
            at_ceiling = self.ceiling is not None and self.limit >= self.ceiling
            far_below = self._refused is not None and 2 * self.limit < self._refused
            if at_ceiling:
                if self._streak < PROBE_AFTER:
                    return
                self.ceiling = max(self.ceiling + 1, int(self.ceiling * GROWTH))
                wider = self.ceiling
            elif far_below:
                if self._streak < FAST_GROW_AFTER:
                    return
                wider = 2 * self.limit
            else:
                if self._streak < GROW_AFTER:
                    return
                wider = max(self.limit + 1, int(self.limit * GROWTH))
            self.limit = wider if self.ceiling is None else min(wider, self.ceiling)
            self._streak = 0
