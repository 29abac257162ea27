"""The receive buffer a client reuses between eth_getLogs answers (fetch/inbox.py)."""

from __future__ import annotations

import pytest

from pipeline.fetch.inbox import Inbox, InboxPool


def test_each_answer_is_read_whole_into_the_same_buffer():
    inbox = Inbox()
    first = inbox.fill([b"abc", b"defg"], expected=7)
    assert bytes(first) == b"abcdefg" and first.readonly
    second = inbox.fill([b"xy", b"z"], expected=3)
    assert bytes(second) == b"xyz"
    assert second.obj is first.obj  # no new memory for a smaller answer


def test_a_bigger_answer_grows_the_buffer_even_while_a_view_of_the_last_one_is_held():
    inbox = Inbox()
    held = inbox.fill([b"a" * 10])
    grown = inbox.fill([b"b" * 10, b"c" * 25])  # a resize would fail while `held` is alive
    assert bytes(grown) == b"b" * 10 + b"c" * 25
    assert len(bytes(held)) == 10  # still memory of its own (what it shows is stale)


@pytest.mark.parametrize("expected", [None, 3, 10**9])
def test_a_wrong_or_missing_length_changes_nothing_but_the_allocation(expected):
    inbox = Inbox(keep_bytes=1 << 20)
    assert bytes(inbox.fill([b"12345", b"678"], expected=expected)) == b"12345678"


def test_a_buffer_bigger_than_the_kept_capacity_is_freed_with_its_answer():
    inbox = Inbox(keep_bytes=16)
    big = inbox.fill([b"x" * 40])
    small = inbox.fill([b"y" * 4])
    assert bytes(big) == b"x" * 40 and small.obj is not big.obj and len(small.obj) <= 16


def test_a_pool_keeps_as_many_inboxes_as_were_lent_at_once_and_lends_the_warm_one_first():
    # An endpoint's 8 threads each kept a buffer as large as the largest answer it had read,
    # though only 1-3 requests were ever in flight at once.
    pool = InboxPool()
    with pool.lent() as first, pool.lent() as second:
        assert first is not second
        second.fill([b"x" * 100])
    kept = []
    for _ in range(5):  # one at a time, as with one request in flight
        with pool.lent() as inbox:
            kept.append(inbox)
    assert all(inbox is first for inbox in kept)  # the last one given back goes out first
