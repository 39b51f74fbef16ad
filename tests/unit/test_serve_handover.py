"""How `rxguard serve`'s parent hands an accepted connection to a worker (`_hand_to_one`):
in turn; past a worker whose channel is full (busy for long) and past one that has ended."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from rxguard.api.serve import _hand_to_one

pytestmark = pytest.mark.skipif(not hasattr(socket, "send_fds"), reason="passes descriptors (Unix)")


@pytest.fixture
def channels() -> Iterator[tuple[dict[int, socket.socket], dict[int, socket.socket]]]:
    """Three workers' channels: the parent's ends by worker, and the workers' ends."""
    pairs = {pid: socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for pid in (11, 12, 13)}
    yield {pid: ours for pid, (ours, _) in pairs.items()}, {pid: theirs for pid, (_, theirs) in pairs.items()}
    for ours, theirs in pairs.values():
        ours.close()
        theirs.close()


def _received(end: socket.socket) -> int:
    """How many descriptors are waiting at a worker's end (closing them)."""
    end.setblocking(False)
    count = 0
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(end, 1024, 16)
        except BlockingIOError:
            return count
        if not data:
            return count
        for fd in fds:
            socket.socket(fileno=fd).close()
        count += len(fds)


def test_connections_go_to_the_workers_in_turn(channels: tuple[dict[int, socket.socket], ...]) -> None:
    ours, theirs = channels
    order, turn = [11, 12, 13], 0
    with socket.socket() as conn:
        for _ in range(7):
            turn = _hand_to_one(conn, ours, order, turn)
    assert [_received(theirs[pid]) for pid in (11, 12, 13)] == [3, 2, 2] and turn == 7


def test_a_worker_whose_channel_is_full_is_passed_over_and_one_that_ended_is_left_out(
    channels: tuple[dict[int, socket.socket], ...],
) -> None:
    ours, theirs = channels
    # Given worker 11 busy for long (its channel full) and worker 12 ended
    ours[11].setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:
            ours[11].send(b"x" * 65536)
    theirs[12].close()
    order = [11, 12, 13]
    # When two connections are handed over, starting at worker 11's turn
    with socket.socket() as conn:
        turn = _hand_to_one(conn, ours, order, 0)
        turn = _hand_to_one(conn, ours, order, turn)
    # Then both went to worker 13, and worker 12 gets no more turns
    assert _received(theirs[13]) == 2 and order == [11, 13]
