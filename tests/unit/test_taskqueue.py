"""Unit tests of the shared task board: cutting to windows and heads, splits, exclusions."""

from __future__ import annotations

from pipeline.messages import Task
from pipeline.plan.board import TaskBoard
from pipeline.plan.chunks import ChunkPlan


def board(start=0, end=999, chunk=1000, endpoints=("a", "b")) -> TaskBoard:
    return TaskBoard(ChunkPlan(start, end, chunk), endpoints)


def test_a_claim_is_cut_to_the_workers_window_and_the_rest_stays_for_others():
    b = board()
    small = b.claim("a#0", 0, max_blocks=100)
    assert (small.start, small.end) == (0, 99)
    big = b.claim("b#0", 0)
    assert (big.start, big.end) == (100, 999)


def test_a_claim_never_goes_past_the_workers_head():
    b = board()
    assert b.claim("a#0", 0, max_end=-1) is None  # nothing it has
    low = b.claim("a#0", 0, max_end=499)
    assert (low.start, low.end) == (0, 499)
    assert b.claim("a#0", 0, max_end=499) is None
    assert b.waiting_beyond(499) and not b.waiting_beyond(999)
    rest = b.claim("b#0", 0, max_end=999)
    assert (rest.start, rest.end) == (500, 999)


def test_cut_pieces_get_new_ids_so_a_late_batch_for_the_whole_task_is_refused():
    b = board()
    whole = b.claim("a#0", 0)
    assert b.release("a#0") == 1  # a died holding it; its batch may still be on the way
    piece = b.claim("b#0", 0, max_blocks=10)
    assert piece.task_id != whole.task_id
    assert not b.accept(whole.task_id)
    assert b.accept(piece.task_id)


def test_split_puts_both_pieces_first_in_line_in_block_order():
    b = TaskBoard(ChunkPlan(0, 1999, 1000), ["a"])
    task = b.claim("a#0", 0)
    head, rest = b.split(task, 299)
    assert (head.start, head.end, rest.start, rest.end) == (0, 299, 300, 999)
    assert b.claim("a#0", 0) == head and b.claim("a#0", 0) == rest
    assert (b.claim("a#0", 0).start, b.state().pending) == (1000, 0)


def test_split_refuses_points_outside_the_task_and_lost_leases():
    b = board()
    task = b.claim("a#0", 0)
    assert b.split(task, task.end) is None and b.split(task, task.start - 1) is None
    b.release("a#0")
    assert b.split(task, 10) is None


def test_an_excluded_endpoint_never_gets_the_task_again_and_the_last_one_fails_it():
    b = board()
    task = b.claim("a#0", 0)
    assert b.exclude(task, "a", "a: pruned")
    assert b.claim("a#0", 0) is None
    again = b.claim("b#0", 0)
    assert again.excluded == frozenset({"a"})
    assert not b.exclude(again, "b", "b: pruned")
    failed, _ = b.unfinished()
    assert [(t.start, t.end, t.last_error) for t in failed] == [(0, 999, "b: pruned")]


def test_a_retired_endpoint_gets_no_more_tasks():
    b = board()
    b.retire("a")
    assert b.claim("a#1", 0) is None
    assert b.claim("b#0", 0) is not None


def test_retiring_an_endpoint_fails_tasks_only_it_could_still_serve():
    b = board()
    task = b.claim("b#0", 0, max_blocks=500)
    b.exclude(task, "b", "b: pruned")
    b.retire("a")
    failed, unfetched = b.unfinished()
    assert [(t.start, t.end) for t in failed] == [(0, 499)]
    assert [(t.start, t.end) for t in unfetched] == [(500, 999)]


def test_accept_takes_a_released_task_off_the_queue_and_counts_it_once():
    b = board()
    task = b.claim("a#0", 0)
    b.release("a#0")
    assert b.accept(task.task_id)
    assert b.claim("b#0", 0) is None
    assert not b.state().settled  # being stored
    b.complete(task.task_id)
    assert b.state().settled and b.state().done == 1


def test_a_task_held_for_its_checks_is_in_flight_but_no_longer_being_fetched():
    b = board()
    task = b.claim("a#0", 0)
    assert b.state().fetching
    b.accept(task.task_id, rows=5)  # the writer holds it until its checks pass
    state = b.state()
    assert not state.settled and state.held == 1
    assert state.fetching == (state.pending > 0)
    while (more := b.claim("a#0", 0)) is not None:
        b.accept(more.task_id, rows=5)
    assert not b.state().fetching and not b.state().settled


def test_unfinished_lists_tasks_being_stored():
    b = board()
    task = b.claim("a#0", 0)
    b.accept(task.task_id)
    assert b.unfinished() == ([], [Task(task.task_id, 0, 999)])
