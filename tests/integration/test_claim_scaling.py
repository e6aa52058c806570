"""The claim's cost does not grow with the backlog or the number of task names
(issue 12): each claim statement is index seeks only on both databases, with no
filter that discards rows of the table, and the claim keeps finding the right
task when other workers' rows, unknown names or scheduled rows pile up."""

from __future__ import annotations

import datetime
import itertools
import json
import re
import threading
import typing as t

import pytest
import sqlalchemy as sa
from conftest import Env
from helpers import run_threads

from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.claims import Outcomes

UTC = datetime.timezone.utc
NAMES = [f"task_{i:02d}" for i in range(25)]


def _define(env: Env, ran: list[str] | None = None) -> None:
    for name in NAMES:
        env.queue.task(name=name)(
            lambda data, name=name: ran.append(name) if ran is not None else None
        )


def _fill(env: Env, count: int, name: str, **options: t.Any) -> None:
    """``count`` due rows of ``name``: through ``perform_many`` for a defined
    name, as a deploy that defines it would write them otherwise."""
    if name not in env.queue.registry:
        now = datetime.datetime.now(UTC) - datetime.timedelta(minutes=1)
        row = {
            "name": name,
            "queue": "default",
            "priority": 0,
            "data": "1",
            "created": now,
            "run_at": now,
            "status": "queued",
            "attempts": 0,
            "failed_nr": 0,
        }
        env.db.session.execute(sa.insert(env.queue.Task), [row] * count)
        env.db.session.commit()
        return
    for start in range(0, count, 5_000):
        env.queue.perform_many(
            name, list(range(start, min(count, start + 5_000))), **options
        )


def _fill_succeeded(env: Env, count: int, name: str) -> None:
    """``count`` succeeded rows of ``name`` kept with a result, expired long
    ago: first in every order a claim uses, were it not for ``status``."""
    past = datetime.datetime.now(UTC) - datetime.timedelta(days=1)
    row = {
        "name": name,
        "queue": "default",
        "priority": 100,
        "data": "1",
        "created": past,
        "run_at": past,
        "status": "succeeded",
        "attempts": 1,
        "failed_nr": 0,
        "result": '{"ok":true}',
        "finished": past,
    }
    env.db.session.execute(sa.insert(env.queue.Task), [row] * count)
    env.db.session.commit()


def _analyze(env: Env) -> None:
    if env.db.engine.dialect.name == "postgresql":
        with env.db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE plainqueue_tasks")
            conn.commit()


def _captured_claims(env: Env, request: ClaimRequest) -> list[tuple[str, t.Any]]:
    """The statements (and parameters) one claim runs on PostgreSQL."""
    seen: list[tuple[str, t.Any]] = []

    def grab(
        conn: t.Any, cursor: t.Any, statement: str, parameters: t.Any, *_: t.Any
    ) -> None:
        if "plainqueue_tasks" in statement:
            seen.append((statement, parameters))

    store = env.queue.store()
    sa.event.listen(store.engine, "before_cursor_execute", grab)
    try:
        store.claim(request)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", grab)
    return seen


_PLANS = itertools.count()


def _pg_plan(
    env: Env, statement: str, parameters: dict[str, t.Any]
) -> dict[str, t.Any]:
    """The plan a worker's prepared claim runs with (a generic plan, as the
    worker forces), executed for real inside a transaction that is rolled back."""
    import psycopg

    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    sql = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
    raw = env.db.engine.raw_connection()
    try:
        driver = t.cast(psycopg.Connection[t.Any], raw.driver_connection)
        literal = psycopg.ClientCursor(driver)
        args = ", ".join(literal.mogrify("%s", [parameters[name]]) for name in names)
        cursor = driver.cursor()
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        # A name of its own: PREPARE outlives the rollback, on a pooled
        # connection.
        name = f"claim_plan_{next(_PLANS)}"
        cursor.execute(f"PREPARE {name} AS {sql}")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({args})")
        row = cursor.fetchone()
        assert row is not None
        plan = row[0][0]["Plan"]
        raw.rollback()
    finally:
        raw.close()
    return t.cast("dict[str, t.Any]", plan)


def _nodes(plan: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _assert_seeks_only(plan: dict[str, t.Any], statement: str) -> None:
    for node in _nodes(plan):
        if (
            node.get("Relation Name") != "plainqueue_tasks"
            or node["Node Type"] == "ModifyTable"
        ):
            continue
        assert node["Node Type"] in ("Index Scan", "Index Only Scan"), (
            statement,
            json.dumps(plan, indent=1),
        )
        assert node.get("Rows Removed by Filter", 0) == 0, (
            statement,
            json.dumps(plan, indent=1),
        )


def _request(
    env: Env,
    names: list[str],
    queues: list[str] | None = None,
    *,
    owner: str = "planner",
    batch: int = 3,
    lease: float = 60,
) -> ClaimRequest:
    """A claim a second from now of up to ``batch`` tasks of each of
    ``names``, leased to ``owner`` for ``lease`` seconds."""
    now = datetime.datetime.now(UTC) + datetime.timedelta(seconds=1)
    return ClaimRequest(
        owner=owner,
        names=names,
        batch_sizes={name: batch for name in names},
        now=now,
        until=now + datetime.timedelta(seconds=lease),
        queues=queues,
    )


@pytest.mark.parametrize("queues", [None, ["default"]], ids=["all-queues", "one-queue"])
@pytest.mark.parametrize(
    "first",
    ["served", "unknown-name", "succeeded"],
    ids=["next-is-served", "unknown-names-first", "kept-succeeded-rows"],
)
def test_postgresql_claim_plans_are_index_seeks_only(
    env: Env, app_ctx: None, first: str, queues: list[str] | None
) -> None:
    """With 25 names and a backlog that belongs to one name (the statistics then
    say every row has that name, which once led the planner to filter an index
    by name), every statement of a claim seeks and discards no row: when the
    first due task is one this worker serves, and when 3,000 due tasks of a name
    it does not know come first (it then asks per name), and when 3,000 kept
    succeeded rows of higher priority and earlier ``run_at`` are stored."""
    if env.db.engine.dialect.name != "postgresql":
        pytest.skip("the SQLite plans are checked in test_storage.py")
    _define(env)
    if first == "unknown-name":
        _fill(env, 3_000, "not_deployed_here")
    if first == "succeeded":
        _fill_succeeded(env, 3_000, NAMES[0])
        _fill_succeeded(env, 3_000, NAMES[1])
    _fill(env, 3_000, NAMES[0])
    _analyze(env)
    claims = _captured_claims(env, _request(env, NAMES, queues))
    statements = [s for s, _ in claims if "UPDATE plainqueue_tasks" in s]
    assert statements, claims
    for statement, parameters in claims:
        _assert_seeks_only(_pg_plan(env, statement, parameters), statement)


def test_postgresql_claim_plans_are_index_seeks_only_without_statistics(
    env: Env, app_ctx: None
) -> None:
    """Right after a burst of enqueues, before autovacuum's ANALYZE, the
    planner's estimates for the two claim indexes tie; the generic plan made
    then is kept until an ANALYZE invalidates it. The one-name statements must
    still walk the claim index, not the due index and a sort of every due
    task (seen: 12 ms per claim at 25,000 due tasks instead of 0.3 ms): no
    scan of the table reads more rows than a batch. (Taking the claimed rows
    by id may then be a sequential scan of the table, which the planner
    believes tiny; past a few thousand rows it is not chosen, and the
    ANALYZE that the growth brings replans it.)"""
    if env.db.engine.dialect.name != "postgresql":
        pytest.skip("the SQLite plans are checked in test_storage.py")
    env.queue.task(name=NAMES[0])(lambda data: None)
    _fill(env, 30_000, NAMES[0])
    with env.db.engine.connect() as conn:
        analyzed = conn.exec_driver_sql(
            "SELECT coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
            " WHERE relname = 'plainqueue_tasks'"
        ).scalar()
    assert analyzed is None
    request = _request(env, NAMES[:1], batch=100)
    store = env.queue.store()
    outcomes = Outcomes()
    for _ in range(50):  # a worker's first batches, deleted as they finish
        tasks = store.claim(request, outcomes)
        outcomes = Outcomes(completed=[(task.id, task.attempts) for task in tasks])
    store.settle(request.owner, outcomes, request.now)
    claims = _captured_claims(env, request)
    assert [s for s, _ in claims if "UPDATE plainqueue_tasks" in s], claims
    for statement, parameters in claims:
        plan = _pg_plan(env, statement, parameters)
        for node in _nodes(plan):
            if node.get("Relation Name") != "plainqueue_tasks" or node["Node Type"] in (
                "ModifyTable",
                "Seq Scan",
            ):
                continue
            assert node["Actual Rows"] <= 100, (statement, json.dumps(plan, indent=1))
            assert node.get("Rows Removed by Filter", 0) == 0, (
                statement,
                json.dumps(plan, indent=1),
            )
        sorts = [n for n in _nodes(plan) if n["Node Type"] == "Sort"]
        assert all(n["Actual Rows"] <= 25 for n in sorts), json.dumps(plan, indent=1)


def test_postgresql_fallback_head_plan_is_index_seeks_only(
    env: Env, app_ctx: None
) -> None:
    """The per-name "which name is next" statement, which a claim runs only when
    another worker is taking every due row of the next name, seeks too."""
    if env.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has one writer, so nothing is locked")
    _define(env)
    _fill(env, 3_000, NAMES[0])
    _fill(env, 5, NAMES[1])
    _analyze(env)
    locker = env.db.engine.connect()
    try:
        # Another worker, mid-claim: it holds every due row of NAMES[0].
        locker.exec_driver_sql(
            "SELECT id FROM plainqueue_tasks WHERE name = %(n)s FOR UPDATE",
            {"n": NAMES[0]},
        )
        claims = _captured_claims(env, _request(env, NAMES))
    finally:
        locker.rollback()
        locker.close()
    heads = [(s, p) for s, p in claims if "UPDATE" not in s and "DELETE" not in s]
    assert heads, claims
    for statement, parameters in heads:
        _assert_seeks_only(_pg_plan(env, statement, parameters), statement)


def test_claim_skips_a_name_another_worker_is_taking(env: Env, app_ctx: None) -> None:
    """While another worker holds every due row of the first name, a claim takes
    the next name's tasks instead of coming back empty (and going idle)."""
    if env.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has one writer, so nothing is locked")
    _define(env)
    _fill(env, 50, NAMES[0])
    env.queue.perform(NAMES[1], 1, delay=0)
    locker = env.db.engine.connect()
    try:
        locker.exec_driver_sql(
            "SELECT id FROM plainqueue_tasks WHERE name = %(n)s FOR UPDATE",
            {"n": NAMES[0]},
        )
        tasks = env.queue.store().claim(_request(env, NAMES))
    finally:
        locker.rollback()
        locker.close()
    assert [task.name for task in tasks] == [NAMES[1]]


def test_expired_lease_is_claimed_next_whatever_the_backlog(
    env: Env, app_ctx: None
) -> None:
    """A killed worker's task becomes due when its lease ends and the next claim
    takes it, however many tasks of names this worker does not know are due
    (walking past them once made such rows wait minutes) and however many
    tasks are scheduled for later."""
    ran: list[str] = []
    _define(env, ran)
    _fill(env, 20_000, "not_deployed_here")
    _fill(env, 5_000, NAMES[3], delay=3600)
    env.queue.perform(NAMES[7], "orphan")
    _analyze(env)
    store = env.queue.store()
    # The worker that took it is gone; its lease ended a second ago.
    dead = store.claim(_request(env, [NAMES[7]], owner="killed", batch=1, lease=-2))
    assert [task.name for task in dead] == [NAMES[7]]
    assert env.queue.drain() == 1
    assert ran == [NAMES[7]]


def test_claims_follow_priority_then_due_time_across_names(
    env: Env, app_ctx: None
) -> None:
    """The claim order the indexes give: highest priority first, then the
    earliest due, then the oldest, across every name a worker knows."""
    ran: list[str] = []
    _define(env, ran)
    base = datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)
    env.queue.perform(NAMES[0], 1, run_at=base + datetime.timedelta(seconds=3))
    env.queue.perform(NAMES[1], 1, run_at=base + datetime.timedelta(seconds=1))
    env.queue.perform(
        NAMES[2], 1, run_at=base + datetime.timedelta(seconds=9), priority=5
    )
    env.queue.perform(
        NAMES[3], 1, run_at=base + datetime.timedelta(seconds=2), priority=-1
    )
    env.queue.perform(NAMES[4], 1, run_at=base + datetime.timedelta(seconds=1))
    assert env.queue.drain() == 5
    assert ran == [NAMES[2], NAMES[1], NAMES[4], NAMES[0], NAMES[3]]


def test_concurrent_claims_with_many_names_take_each_task_once(
    env: Env, app_ctx: None
) -> None:
    """Eight claimers over 25 names: every task claimed exactly once, no batch
    larger than its batch size."""
    _define(env)
    for i, name in enumerate(NAMES):
        _fill(env, 20 + i, name)
    total = sum(20 + i for i in range(len(NAMES)))
    store = env.queue.store()
    taken: list[int] = []
    sizes: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while True:
            now = datetime.datetime.now(UTC)
            tasks = store.claim(
                ClaimRequest(
                    owner=f"c{n}",
                    names=NAMES,
                    batch_sizes={name: 3 for name in NAMES},
                    now=now,
                    until=now + datetime.timedelta(hours=1),
                )
            )
            if not tasks:
                return
            with lock:
                taken.extend(task.id for task in tasks)
                sizes.append(len(tasks))

    run_threads(claimer, 8)
    assert len(taken) == len(set(taken)) == total
    assert max(sizes) <= 3


def test_a_running_worker_hands_back_an_expired_lease_at_its_next_poll(
    env: Env, app_ctx: None
) -> None:
    """A killed worker's task, leased for 2 more seconds, runs on an idle worker
    that is already running once the lease ends (an expired lease sends no
    notification: the worker's claims hand expired leases back once per poll
    interval), and not before."""
    ran: list[datetime.datetime] = []
    done = threading.Event()

    def orphan(data: t.Any) -> None:
        ran.append(datetime.datetime.now(UTC))
        done.set()

    env.queue.task(name="orphan")(orphan)
    env.queue.perform("orphan", 1)
    request = _request(env, ["orphan"], owner="killed", batch=1, lease=2)
    held = env.queue.store().claim(request)
    assert [task.name for task in held] == ["orphan"]
    env.queue.start_worker(env.app, force=True)
    try:
        assert done.wait(60), "the expired lease was never handed back"
    finally:
        env.queue.stop_worker(env.app, timeout=10)
    assert len(ran) == 1 and ran[0] >= request.until
    assert env.queue.count() == 0
