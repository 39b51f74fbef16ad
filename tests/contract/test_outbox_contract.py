"""The outbox contract (rxguard.alerts.outbox.Outbox), run over every adapter.

Adapters join `ADAPTERS` with a factory taking a temporary directory; the DynamoDB one
(OutboxTable of template.yaml on moto) takes the module's moto client instead."""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rxguard.alerts.outbox import InMemoryOutbox, Outbox, OutboxEntry, drain
from rxguard.alerts.schema import AlertMessage
from rxguard_tools.offline.cfn import load_template
from tests.conftest import ROOT
from tests.factories import create_table


def _sqlite(tmp: Path) -> Outbox:
    state = importlib.import_module("rxguard.local.state")
    return state.State.open(tmp / "state").outbox()  # type: ignore[no-any-return]


_TABLES = itertools.count()


def _dynamo(ddb: Any) -> Outbox:
    """The OutboxTable of template.yaml on moto, a fresh table per test."""
    from rxguard.alerts.outbox_dynamo import DynamoOutbox

    name = f"contract-OutboxTable-{next(_TABLES)}"
    props = load_template(ROOT / "template.yaml")["Resources"]["OutboxTable"]["Properties"]
    create_table(ddb, name, props)
    return DynamoOutbox(name, ddb)


ADAPTERS: dict[str, Callable[[Path], Outbox]] = {"memory": lambda _tmp: InMemoryOutbox(), "sqlite": _sqlite}


@pytest.fixture(params=[*sorted(ADAPTERS), "dynamo"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Outbox:
    if request.param == "dynamo":
        return _dynamo(request.getfixturevalue("moto_ddb"))
    return ADAPTERS[request.param](tmp_path)


def _entry(n: int, topic: str = "alerts") -> OutboxEntry:
    message = AlertMessage(
        message_id=f"finding/{n:032x}",
        message_type="finding" if topic == "alerts" else "letter",
        subject=f"rxguard {n}",
        body={"schema_version": "1", "n": n},
        attributes={"severity": "high"},
    )
    return OutboxEntry(topic=topic, message=message)


def test_record_keeps_each_id_once_and_returns_only_the_new(outbox: Outbox) -> None:
    # Given two entries recorded
    first = outbox.record([_entry(1), _entry(2, "letters")])
    # When the same ids come again with one new
    again = outbox.record([_entry(2, "letters"), _entry(3), _entry(1)])
    # Then only the unknown one is recorded, and pending keeps recording order
    assert [e.message_id for e in first] == [_entry(1).message_id, _entry(2).message_id]
    assert [e.message_id for e in again] == [_entry(3).message_id]
    pending = outbox.pending()
    assert [e.message_id for e in pending] == [_entry(n).message_id for n in (1, 2, 3)]
    assert pending[1].topic == "letters" and pending[1].message == _entry(2, "letters").message


def test_sent_messages_leave_pending_and_are_never_recorded_again(outbox: Outbox) -> None:
    outbox.record([_entry(1), _entry(2)])
    outbox.mark_sent([_entry(1).message_id, "finding/unknown"])
    outbox.mark_sent([_entry(1).message_id])  # twice is harmless
    assert [e.message_id for e in outbox.pending()] == [_entry(2).message_id]
    assert outbox.record([_entry(1)]) == []  # sent before: not recorded again
    assert [e.message_id for e in outbox.pending()] == [_entry(2).message_id]


def test_drain_marks_sent_only_what_the_sink_took_and_the_next_drain_finishes(outbox: Outbox) -> None:
    # Given three pending messages and a sink that fails on the second
    outbox.record([_entry(1), _entry(2), _entry(3)])
    delivered: list[str] = []
    down = [True]

    def flaky(entry: OutboxEntry) -> None:
        if entry.message_id == _entry(2).message_id and down[0]:
            down[0] = False
            raise ConnectionError("sink down")
        delivered.append(entry.message_id)

    # When the first drain fails mid-way
    with pytest.raises(ConnectionError):
        drain(outbox, flaky)
    # Then what the sink took is sent, the rest pending; the next drain publishes the rest once
    assert [e.message_id for e in outbox.pending()] == [_entry(2).message_id, _entry(3).message_id]
    assert drain(outbox, flaky) == (2, 0)
    assert delivered == [_entry(n).message_id for n in (1, 2, 3)]
    assert outbox.pending() == []


def test_recorded_answers_which_ids_were_ever_recorded(outbox: Outbox) -> None:
    # Given one message sent and one pending
    outbox.record([_entry(1), _entry(2)])
    outbox.mark_sent([_entry(1).message_id])
    # Then both are known (a sent id is never recorded again), an unknown one is not
    try:
        known = outbox.recorded([_entry(1).message_id, _entry(2).message_id, _entry(9).message_id])
    except NotImplementedError:
        pytest.skip("this adapter cannot answer recorded()")
    assert known == {_entry(1).message_id, _entry(2).message_id}


def test_a_second_instance_sees_the_pending_messages_and_marks_them_sent(outbox: Outbox) -> None:
    # Given messages recorded by one process (a Notify that died before publishing)
    outbox.record([_entry(1), _entry(2), _entry(3)])
    if isinstance(outbox, InMemoryOutbox):
        pytest.skip("one process only")
    other = _reopen(outbox)
    # When another process (the next Notify, the sweeper) drains them
    delivered: list[str] = []
    assert drain(other, lambda e: delivered.append(e.message_id)) == (3, 0)
    # Then each was delivered once, in recording order, and nothing is pending anywhere
    assert delivered == [_entry(n).message_id for n in (1, 2, 3)]
    assert outbox.pending() == [] and other.pending() == []


def _reopen(outbox: Outbox) -> Outbox:
    """A second adapter over the same storage."""
    if type(outbox).__name__ == "DynamoOutbox":
        from rxguard.alerts.outbox_dynamo import DynamoOutbox

        assert isinstance(outbox, DynamoOutbox)
        return DynamoOutbox(outbox.table, outbox.ddb)
    state = importlib.import_module("rxguard.local.state")
    return state.State.open(outbox.state.path.parent).outbox()  # type: ignore[attr-defined,no-any-return]


def test_a_recording_sink_records_many_alerts_as_it_would_one_by_one(outbox: Outbox) -> None:
    from rxguard.alerts.outbox import RecordingSink
    from rxguard.alerts.sink import InMemorySink

    # Given one alert recorded before
    sink = RecordingSink(outbox, InMemorySink())
    assert sink.publish_alert(_entry(1).message)
    # When a list with it, two new ones and one of them repeated is published at once
    flags = sink.publish_alerts([_entry(n).message for n in (2, 1, 3, 2)])
    # Then each is recorded once, in order, and the flags say which were new
    assert flags == [True, False, True, False]
    assert sink.recorded_ids == [_entry(n).message_id for n in (1, 2, 3)]
    assert [e.message_id for e in outbox.pending()] == [_entry(n).message_id for n in (1, 2, 3)]
