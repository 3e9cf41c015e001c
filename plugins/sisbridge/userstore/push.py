"""The push of a run's change set into the store, in batches, and the warehouse's record of it.

The change set goes from the warehouse to the store through DuckDB (`transfer`). Then the batches
are applied, one store transaction each: a batch sets its users and their memberships to the run's
target state, so replaying it is harmless; it keeps its before images (`before_images`) and records
itself in `sisbridge_push_batches` in that same transaction, so a retried push skips what committed
and never captures a second "before". A school's first push (a store with none of its users) has
nothing to compare or keep: its batches are copied straight into the store's tables
(`apply_new_batch`). On PostgreSQL `SISBRIDGE_PUSH_WORKERS` batches run at a time, each in its own
store connection. Meanwhile one warehouse transaction advances the baseline and records the changes;
it commits once every batch has committed and the before images are in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass

import sqlalchemy as sa

from sisbridge import audit
from sisbridge.config import SchoolConfig, push_workers
from sisbridge.userstore import before_images, statements, transfer
from sisbridge.userstore.baseline import (
    PushResult,
    advance_baseline,
    ensure_warehouse_tables,
    record_audit,
    record_changes,
    require_change_set,
)
from sisbridge.userstore.schema import (
    SIS_FIELDS,
    PermanentStoreError,
    ensure_schema,
    first_line,
    is_postgres,
    push_batches,
    refresh_stale_statistics,
    store_errors,
    users,
)
from sisbridge.userstore.statements import STAGE_USERS

log = logging.getLogger(__name__)

# Users per store transaction, at most (`transfer.batch_size_for`): bounds the row locks held and the
# memory of one batch.
DEFAULT_BATCH_SIZE = 20_000


@dataclass(frozen=True)
class PushPlan:
    """What one push does: whose run, how it is cut, and which batches are still to apply."""

    engine: sa.Engine
    school: SchoolConfig
    run_id: str
    batch_size: int
    batches: int
    pending: tuple[int, ...]
    workers: int
    prepared: transfer.Prepared
    # The name under which the store is attached to the warehouse connection for the push.
    store: str
    # The store held none of the school's users when the push started (its first push): its batches
    # are copied straight into the store's tables (`apply_new_batch`).
    new_school: bool = False

    @property
    def school_id(self) -> str:
        return self.school.school_id

    def describe(self, batch_no: int) -> str:
        return f"applying batch {batch_no + 1} of {self.batches} of run {self.run_id}"


def _stored_result(con, run_id: str) -> PushResult | None:
    row = con.execute(
        """
        select creates, updates, reactivations, deactivations, deletes, opt_outs, batches
        from audit.push_runs where run_id = ?
        """,
        [run_id],
    ).fetchone()
    return None if row is None else PushResult(*row)


def done_batches(engine: sa.Engine, school_id: str, run_id: str) -> dict[int, int]:
    """The committed batches of a run, with the batch size they were cut with."""
    query = sa.select(push_batches.c.batch_no, push_batches.c.batch_size).where(
        push_batches.c.school_id == school_id, push_batches.c.run_id == run_id
    )
    with store_errors("reading the push progress"), engine.connect() as conn:
        return dict(conn.execute(query).all())


def _forget_finished_images(con, engine: sa.Engine, school_id: str) -> None:
    """Delete the store's before images of runs whose push finished (left by a push that died late)."""
    with store_errors("reading the push progress"), engine.begin() as conn:
        runs = before_images.runs_with_images(conn, school_id)
        if not runs:
            return
        placeholders = ", ".join("?" for _ in runs)
        finished = [
            row[0]
            for row in con.execute(
                f"select run_id from audit.push_runs where run_id in ({placeholders})", runs
            ).fetchall()
        ]
        before_images.forget(conn, school_id, finished)


def push(
    con,
    engine: sa.Engine,
    school: SchoolConfig,
    run_id: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
) -> PushResult:
    """Apply the run's change set to the store in batches; then advance the baseline and the audit.

    `con` is the school's warehouse connection. `workers` batches are applied at a time, each in its
    own store transaction (default `push_workers()`; always one on SQLite, which has one writer).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    workers = push_workers() if workers is None else workers
    if workers < 1:
        raise ValueError("workers must be at least 1")
    ensure_warehouse_tables(con)
    done_result = _stored_result(con, run_id)
    if done_result is not None:
        return done_result
    require_change_set(con)
    ensure_schema(engine)
    done = done_batches(engine, school.school_id, run_id)
    if done:
        # A retry must cut the change set exactly as the first attempt did.
        batch_size = next(iter(done.values()))
    else:
        users = con.execute("select count(distinct external_id) from marts.user_changes").fetchone()[0]
        batch_size = transfer.batch_size_for(users, batch_size, workers if is_postgres(engine) else 1)
    _forget_finished_images(con, engine, school.school_id)
    try:
        return _push(con, engine, school, run_id, batch_size, done, workers, direct=True)
    except _DirectCopyFailed as exc:
        # Most likely a user the store has after all (written by someone else since the push began).
        log.warning(
            "run %s: copying the new users straight into the store failed (%s); applying the rest as changes",
            run_id,
            first_line(exc.__cause__),
        )
    done = done_batches(engine, school.school_id, run_id)
    return _push(con, engine, school, run_id, batch_size, done, workers, direct=False)


class _DirectCopyFailed(Exception):
    """A batch of a first push could not be copied straight into the store (not for a lost connection)."""


def _push(
    con,
    engine: sa.Engine,
    school: SchoolConfig,
    run_id: str,
    batch_size: int,
    done: dict[int, int],
    workers: int,
    *,
    direct: bool,
) -> PushResult:
    phases: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(transfer.scratch(con))
        for table in ("_push_changed", "_push_member_changes"):
            stack.callback(con.execute, f"drop table if exists temp.{table}")
        with _timed(phases, "prepare"):
            prepared = transfer.prepare(con, scratch, school, batch_size)
        pending = tuple(batch_no for batch_no in range(prepared.batches) if batch_no not in done)
        postgres = is_postgres(engine)
        with store_errors(f"attaching the store for run {run_id}"):
            store = stack.enter_context(transfer.attached(con, engine))
        plan = PushPlan(
            engine=engine,
            school=school,
            run_id=run_id,
            batch_size=batch_size,
            batches=prepared.batches,
            pending=pending,
            workers=workers if postgres else 1,
            prepared=prepared,
            store=store,
            # No batch of the run committed yet (else its before images are in the store), and the
            # store has none of the school's users.
            new_school=direct
            and postgres
            and bool(pending)
            and not done
            and not _store_has_users(engine, school.school_id),
        )
        if plan.pending and not plan.new_school:
            with _timed(phases, "statistics"):
                applied_users = con.execute("select count(*) from state.applied_users").fetchone()[0]
                refresh_stale_statistics(engine, school.school_id, applied_users)
            with _timed(phases, "transfer"), store_errors(f"copying the change set of run {run_id}"):
                transfer.fill(con, store, engine, prepared, school.school_id, list(plan.pending))
        result = _apply_and_finish(con, plan, phases)
    with _timed(phases, "cleanup"):
        _cleanup(engine, school.school_id, run_id)
    log.info(
        "push of run %s took %s",
        run_id,
        ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in phases.items()),
    )
    return result


def _store_has_users(engine: sa.Engine, school_id: str) -> bool:
    query = sa.select(users.c.external_id).where(users.c.school_id == school_id).limit(1)
    with store_errors("reading the store"), engine.connect() as conn:
        return conn.execute(query).first() is not None


@contextlib.contextmanager
def _timed(phases: dict[str, float], phase: str) -> Generator[None, None, None]:
    """Add the wall time of the block to phases[phase] (for the push's log line)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started


class _Batches:
    """The pending batches, applied by `workers` threads while the caller does the warehouse's part.

    Batches touch disjoint users, and each commits on its own with its row in the batch table, so
    their order does not matter. After a failure no further batch starts; the ones already running
    finish (commit or roll back), and a retry applies whatever did not commit. A worker takes its own
    store connection from the engine's pool for each batch. The workers of a first push each use a
    DuckDB cursor instead, which reads only the push's scratch tables and writes only to the
    attached store, never to the warehouse.
    """

    def __init__(self, con, plan: PushPlan):
        self.plan = plan
        self._pending = iter(plan.pending)
        self._taking = threading.Lock()
        self._failed = threading.Event()
        self._errors: dict[int, BaseException] = {}
        count = min(plan.workers, len(plan.pending))
        self._cursors = [con.cursor() for _ in range(count)] if plan.new_school else [None] * count
        self._threads = [
            threading.Thread(target=self._work, args=(cursor,), name=f"sisbridge-push-{n}", daemon=True)
            for n, cursor in enumerate(self._cursors)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _work(self, cursor) -> None:
        while not self._failed.is_set():
            with self._taking:
                batch_no = next(self._pending, None)
            if batch_no is None:
                return
            try:
                with store_errors(self.plan.describe(batch_no)):
                    if cursor is None:
                        apply_batch(self.plan, batch_no)
                    else:
                        apply_new_batch(self.plan, batch_no, cursor)
            except BaseException as exc:
                self._errors[batch_no] = exc
                self._failed.set()

    def join(self, *, stop: bool = False) -> None:
        """Wait for the workers (`stop`: start no further batch); raise the first failed batch's error."""
        if stop:
            self._failed.set()
        for thread in self._threads:
            thread.join()
        for cursor in self._cursors:
            if cursor is not None:
                cursor.close()
        if self._errors:
            first = min(self._errors)
            for batch_no, exc in sorted(self._errors.items()):
                if batch_no != first:
                    log.warning(
                        "batch %d of run %s also failed: %s", batch_no + 1, self.plan.run_id, first_line(exc)
                    )
            error = self._errors[first]
            if self.plan.new_school and isinstance(error, PermanentStoreError):
                raise _DirectCopyFailed() from error
            raise error


def apply_new_batch(plan: PushPlan, batch_no: int, cursor) -> None:
    """Copy a batch of users the store does not have, and their memberships, straight into the store.

    One store transaction through DuckDB's postgres extension (`cursor`: a DuckDB cursor, the store
    attached as `plan.store`): binary COPYs into `users` and `user_communities`, and the batch's row
    in `sisbridge_push_batches`. A school's first push has nothing to capture, compare, update or
    delete; should a user be in the store after all, the key makes the COPY fail (`push`).
    """
    now = audit.utcnow()
    store, prepared = plan.store, plan.prepared
    batch = int(batch_no)
    fields = ", ".join(SIS_FIELDS)
    cursor.execute("begin")
    try:
        # The foreign key check of each membership is planned once per store session (see
        # `apply_batch`); while the school's users are being written, only an index scan is right.
        cursor.execute(f"call postgres_execute('{store}', 'set local enable_seqscan = off')")
        cursor.execute(
            f"""
            insert into {store}.users
                (school_id, external_id, {fields}, email_opt_out, created_at, updated_at)
            select ?, s.external_id, {", ".join(f"s.{field}" for field in SIS_FIELDS)},
                   {statements.NEW_USER_OPT_OUT}, ?, ?
            from {prepared.users} as s
            where s.batch_no = {batch} and s.in_target
            """,
            [plan.school_id, now, now],
        )
        cursor.execute(
            f"""
            insert into {store}.user_communities (school_id, external_id, community_group, community)
            select ?, external_id, community_group, community from {prepared.members}
            where batch_no = {batch}
            """,
            [plan.school_id],
        )
        record_new_batch(cursor, plan, batch_no, prepared.sizes[batch_no], now)
        cursor.execute("commit")
    except BaseException:
        with contextlib.suppress(Exception):
            cursor.execute("rollback")
        raise


def record_new_batch(cursor, plan: PushPlan, batch_no: int, count: int, at) -> None:
    cursor.execute(
        f"""
        insert into {plan.store}.{push_batches.name}
            (school_id, run_id, batch_no, batch_size, users_in_batch, applied_at)
        values (?, ?, ?, ?, ?, ?)
        """,
        [plan.school_id, plan.run_id, batch_no, plan.batch_size, count, at],
    )


def apply_batch(plan: PushPlan, batch_no: int) -> None:
    """Set one batch of users and their memberships to the target state, in one store transaction."""
    now = audit.utcnow()
    params = statements.params(plan.school_id, now)
    text = statements.text
    count = plan.prepared.sizes[batch_no]
    with plan.engine.begin() as conn:
        postgres = is_postgres(conn)
        if postgres:
            # Every statement of a batch is driven by its staged users through the store's primary
            # keys. Left to itself the planner hashes the whole users and user_communities tables once
            # per batch instead: linear in the school's size for every batch.
            conn.exec_driver_sql("set local enable_hashjoin = off")
            conn.exec_driver_sql("set local enable_mergejoin = off")
            # With hash joins off, a batch's UPDATE is costed above jit_above_cost and its
            # optimization thresholds: PostgreSQL then spent 0.7-1 s compiling it, per batch, for
            # statements that run a few hundred milliseconds.
            conn.exec_driver_sql("set local jit = off")
            # Statistics taken while the school's (or the store's) users table was empty make a
            # sequential scan look free. The foreign key check of every inserted membership is then
            # planned as a scan of users, which grows during the push: a 100k-user first push into
            # a truncated store took 46-70 s instead of 3 s. The plan is made on first use in the
            # session and kept, so it must be made here.
            conn.exec_driver_sql("set local enable_seqscan = off")
        transfer.stage_batch(conn, plan.school_id, batch_no)
        existing = before_images.capture(conn, plan.school_id, plan.run_id, batch_no)
        if existing:
            # A batch of new users only has nothing to update or delete: each of these statements
            # would probe the store's indexes once per staged user and find nothing.
            conn.execute(text(statements.UPDATE_USERS), params)
            conn.execute(text(statements.delete_gone_memberships(postgres=postgres)), params)
            conn.execute(text(statements.delete_users(STAGE_USERS, "in_target")), params)
        if existing < count:  # else every staged user is in the store already: nothing to insert
            conn.execute(text(statements.INSERT_USERS), params)
        conn.execute(text(statements.INSERT_ADDED_MEMBERSHIPS), params)
        transfer.unstage(conn)
        record_batch(conn, plan, batch_no, count, now)


def record_batch(conn: sa.Connection, plan: PushPlan, batch_no: int, count: int, at) -> None:
    conn.execute(
        push_batches.insert().values(
            school_id=plan.school_id,
            run_id=plan.run_id,
            batch_no=batch_no,
            batch_size=plan.batch_size,
            users_in_batch=count,
            applied_at=at,
        )
    )


def _cleanup(engine: sa.Engine, school_id: str, run_id: str) -> None:
    """Drop the run's transfer tables and the store's copy of its before images.

    The push has succeeded by now: a failure here is only logged, and the next push cleans up.
    """
    try:
        with store_errors(f"cleaning up after run {run_id}"):
            transfer.drop_transfer_tables(engine, school_id)
            with engine.begin() as conn:
                before_images.forget(conn, school_id, [run_id])
    except Exception as exc:  # the push itself succeeded
        log.warning("push of run %s succeeded but could not clean up the store: %s", run_id, exc)


def _apply_and_finish(con, plan: PushPlan, phases: dict[str, float]) -> PushResult:
    """Apply the pending batches and write the warehouse's side of the push, in one warehouse transaction.

    The baseline is advanced while the batches run: it depends on the warehouse only, and the
    transaction commits only once every batch has committed and the before images are in. A failed
    batch rolls the transaction back (and a failure in the warehouse stops the batches), so nothing
    of the run is in the baseline or the audit until the whole push has succeeded.
    """
    run_id = plan.run_id
    now = audit.utcnow()
    batches = _Batches(con, plan)
    label = f"{len(plan.pending)} batches"
    if plan.pending:
        phases[label] = 0.0  # logged before the baseline, which runs alongside them
    started = time.perf_counter()
    batches.start()
    began = False
    try:
        try:
            con.execute("begin")
            began = True
            with _timed(phases, "baseline alongside"):
                advance_baseline(con, plan.run_id)
                record_changes(con, run_id, now)
                if plan.new_school:
                    # The store has none of the run's users: their before images and the audit
                    # need nothing from the batches.
                    before_images.record_absent(con, plan.prepared.users, run_id, now)
                    result = record_audit(
                        con, plan.run_id, plan.school_id, plan.batch_size, plan.batches, now
                    )
        except BaseException:
            batches.join(stop=True)
            raise
        batches.join()
        if plan.pending:
            phases[label] = time.perf_counter() - started
        with _timed(phases, "finish"):
            if not plan.new_school:
                with store_errors(f"reading the before images of run {run_id}"):
                    before_images.move_to_warehouse(
                        con,
                        plan.store,
                        plan.prepared.users,
                        plan.school_id,
                        run_id,
                        now,
                        postgres=is_postgres(plan.engine),
                    )
                result = record_audit(con, plan.run_id, plan.school_id, plan.batch_size, plan.batches, now)
            con.execute("commit")
    except BaseException:
        if began:
            con.execute("rollback")
        raise
    return result
