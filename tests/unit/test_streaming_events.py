"""The event ids and messages of ``queue.stream`` (flask_plainqueue.streaming),
without a database."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from flask_plainqueue import TaskInfo
from flask_plainqueue import TaskState
from flask_plainqueue.streaming import changes
from flask_plainqueue.streaming import message
from flask_plainqueue.streaming import Seen

NOW = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
RUNNING = TaskInfo(
    id=7,
    name="r",
    queue="default",
    priority=0,
    state=TaskState.RUNNING,
    data=None,
    created=NOW,
    run_at=NOW,
    attempts=1,
    failed_nr=0,
    failed_last=None,
    error=None,
    lease_owner="w",
    unique_key=None,
    progress_json='{"done":1}',
)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "junk",
        "1.running.1",
        "x.running.1.-",
        "1.flying.1.-",
        "1.running.-1.-",
    ],
)
def test_ids_that_are_not_ours_resume_nothing(text: str | None) -> None:
    assert Seen.parse(text) is None


def test_an_id_round_trips() -> None:
    seen = Seen(3, "running", 2, "abc")
    assert Seen.parse(seen.event_id) == seen
    assert not seen.done and Seen(4, "gone", 0, "-").done


def test_a_multi_line_value_is_sent_as_several_data_lines() -> None:
    assert message("progress", "a\nb", "1.running.1.-") == (
        "event: progress\nid: 1.running.1.-\ndata: a\ndata: b\n\n"
    )


def test_only_what_changed_is_sent() -> None:
    out, seen = changes(RUNNING, None)
    assert [m.split("\n")[0] for m in out] == ["event: state", "event: progress"]
    assert seen.seq == 2
    assert changes(RUNNING, seen) == ([], seen)
    moved = dataclasses.replace(RUNNING, progress_json='{"done":2}')
    out, after = changes(moved, seen)
    assert len(out) == 1 and out[0].startswith("event: progress\nid: 3.running.1.")
    done = dataclasses.replace(moved, state=TaskState.SUCCEEDED, result_json='{"n":1}')
    out, end = changes(done, after)
    assert len(out) == 1 and end.done
    assert json.loads(out[0].split("data: ", 1)[1]) == {
        "state": "succeeded",
        "result": {"n": 1},
    }
