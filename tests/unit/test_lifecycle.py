"""The run's processes: how they are started (run/lifecycle.py)."""

from __future__ import annotations

import os

from pipeline.run import lifecycle


def test_a_runs_processes_load_pyarrow_with_the_system_allocator_unless_the_user_chose(
    monkeypatch,
):
    # Arrow picks its C++ default pool as it loads; mimalloc's heaps kept ~30 MB more in each
    # process (1M logs: 373-407 MB at the tree's peak, 298-323 MB with the system's).
    monkeypatch.setattr(lifecycle.forkserver, "ensure_running", lambda: None)
    monkeypatch.delenv(lifecycle.ARROW_POOL_VARIABLE, raising=False)
    lifecycle.process_context()
    assert os.environ[lifecycle.ARROW_POOL_VARIABLE] == "system"
    monkeypatch.setenv(lifecycle.ARROW_POOL_VARIABLE, "jemalloc")
    lifecycle.process_context()
    assert os.environ[lifecycle.ARROW_POOL_VARIABLE] == "jemalloc"
