"""The push of a run's change set into the store, in batches, and the warehouse's record of it.

The change set goes from the warehouse to the store through DuckDB (`transfer`). Then the batches
are applied, one store transaction each: a batch sets its users and their memberships to the run's
target state, so replaying it is harmless; it keeps its before images (`before_images`) and records
itself in `sisbridge_push_batches` in that same transaction, so a retried push skips what committed
and never captures a second "before". On PostgreSQL `SISBRIDGE_PUSH_WORKERS` batches run at a time,
each in its own pooled store connection; the workers never touch DuckDB. Once all batches are done,
one warehouse transaction moves the before images in, advances the baseline and writes the audit.
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
    ensure_warehouse_tables,
    require_change_set,
    set_baseline_rows,
)
from sisbridge.userstore.schema import (
    MEMBERSHIP_COLUMNS,
    STATE_USER_COLUMNS,
    ensure_schema,
    first_line,
    is_postgres,
    push_batches,
    refresh_stale_statistics,
    store_errors,
)
from sisbridge.userstore.statements import STAGE_USERS

log = logging.getLogger(__name__)

# Users per store transaction: bounds the row locks held and the memory of one batch.
DEFAULT_BATCH_SIZE = 20_000


@dataclass(frozen=True)
class PushResult:
    """Users changed by a push, per change type (applied changes only), and the batches it took."""

    creates: int
    updates: int
    reactivations: int
    deactivations: int
    deletes: int
    opt_outs: int
    batches: int


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
    _forget_finished_images(con, engine, school.school_id)
    phases: dict[str, float] = {}
    try:
        with _timed(phases, "prepare"):
            batches = transfer.prepare(con, school, batch_size)
        plan = PushPlan(
            engine=engine,
            school=school,
            run_id=run_id,
            batch_size=batch_size,
            batches=batches,
            pending=tuple(batch_no for batch_no in range(batches) if batch_no not in done),
            workers=workers if is_postgres(engine) else 1,
        )
        if plan.pending:
            with _timed(phases, "statistics"):
                applied_users = con.execute("select count(*) from state.applied_users").fetchone()[0]
                refresh_stale_statistics(engine, school.school_id, applied_users)
            with _timed(phases, "transfer"), store_errors(f"copying the change set of run {run_id}"):
                transfer.fill(con, engine, school.school_id, list(plan.pending))
            with _timed(phases, f"{len(plan.pending)} batches"):
                _apply_batches(plan)
        with _timed(phases, "finish"):
            result = _finish_push(con, plan)
        with _timed(phases, "cleanup"):
            _cleanup(engine, school.school_id, run_id)
        log.info(
            "push of run %s took %s",
            run_id,
            ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in phases.items()),
        )
        return result
    finally:
        transfer.drop_prepared(con)
        con.execute("drop table if exists temp._push_changed")


@contextlib.contextmanager
def _timed(phases: dict[str, float], phase: str) -> Generator[None, None, None]:
    """Add the wall time of the block to phases[phase] (for the push's log line)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started


def _apply_batches(plan: PushPlan) -> None:
    """Apply the pending batches in order, `workers` at a time; raise the first failed batch's error.

    Batches touch disjoint users, and each commits on its own with its row in the batch table, so
    their order does not matter. After a failure no further batch starts; the ones already running
    finish (commit or roll back), and a retry applies whatever did not commit.
    """

    def apply(batch_no: int) -> None:
        with store_errors(plan.describe(batch_no)):
            apply_batch(plan, batch_no)

    order = list(plan.pending)
    if plan.workers == 1 or len(order) < 2:
        for batch_no in order:
            apply(batch_no)
        return
    pending = iter(order)
    taking = threading.Lock()
    failed = threading.Event()
    errors: dict[int, BaseException] = {}

    def work() -> None:
        while not failed.is_set():
            with taking:
                batch_no = next(pending, None)
            if batch_no is None:
                return
            try:
                apply(batch_no)
            except BaseException as exc:
                errors[batch_no] = exc
                failed.set()

    # Each worker takes its own store connection from the engine's pool for each batch.
    threads = [
        threading.Thread(target=work, name=f"sisbridge-push-{n}", daemon=True)
        for n in range(min(plan.workers, len(order)))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        failed.set()
    if errors:
        first = min(errors)
        for batch_no, exc in sorted(errors.items()):
            if batch_no != first:
                log.warning("batch %d of run %s also failed: %s", batch_no + 1, plan.run_id, first_line(exc))
        raise errors[first]


def apply_batch(plan: PushPlan, batch_no: int) -> None:
    """Set one batch of users and their memberships to the target state, in one store transaction."""
    now = audit.utcnow()
    params = statements.params(plan.school_id, now)
    text = statements.text
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
        count = transfer.stage_batch(conn, plan.school_id, batch_no)
        existing = before_images.capture(conn, plan.school_id, plan.run_id, batch_no)
        if existing:
            # Users first, while the old memberships are still there to compare against. A batch of
            # new users only (a school's first push) has nothing to update or delete: each of these
            # statements would probe the store's indexes once per staged user and find nothing.
            conn.execute(text(statements.UPDATE_USERS), params)
            conn.execute(text(statements.delete_stale_memberships(STAGE_USERS, postgres=postgres)), params)
            conn.execute(text(statements.delete_users(STAGE_USERS, "in_target")), params)
        if existing < count:  # else every staged user is in the store already: nothing to insert
            conn.execute(text(statements.INSERT_USERS), params)
        conn.execute(text(statements.insert_memberships(STAGE_USERS, "in_target")), params)
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


def _finish_push(con, plan: PushPlan) -> PushResult:
    """Move the before images in, advance the baseline and write the audit, in one warehouse transaction.

    Only the users whose baseline row or memberships differ from the target are rewritten (stamped
    with this run's id), and their previous baseline rows are kept in `audit.push_baseline_*`.
    """
    run_id = plan.run_id
    now = audit.utcnow()
    users_cols = ", ".join(STATE_USER_COLUMNS)
    members_cols = ", ".join(MEMBERSHIP_COLUMNS)
    with contextlib.ExitStack() as stack:
        with store_errors(f"reading the before images of run {run_id}"):
            store = stack.enter_context(transfer.attached(con, plan.engine))
        con.execute("begin")
        try:
            with store_errors(f"reading the before images of run {run_id}"):
                before_images.move_to_warehouse(
                    con, store, plan.school_id, run_id, now, postgres=is_postgres(plan.engine)
                )
            result = _advance_baseline(con, plan, now, users_cols, members_cols)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    return result


def _advance_baseline(con, plan: PushPlan, now, users_cols: str, members_cols: str) -> PushResult:
    run_id = plan.run_id
    # The users whose baseline row or memberships differ from the target, in either direction.
    # `is distinct from` compares NULLs as equal; one join per table, keyed on the user.
    differs = " or ".join(f"a.{column} is distinct from t.{column}" for column in STATE_USER_COLUMNS[1:])
    con.execute(
        f"""
        create or replace temp table _push_changed as
        select coalesce(a.external_id, t.external_id) as external_id
        from state.applied_users as a
        full join intermediate.int_users_target_state as t on a.external_id = t.external_id
        where a.external_id is null or t.external_id is null or {differs}
        union
        select coalesce(a.external_id, t.external_id)
        from state.applied_memberships as a
        full join intermediate.int_memberships_target_state as t
            on a.external_id = t.external_id
            and a.community_group = t.community_group
            and a.community = t.community
        where a.external_id is null or t.external_id is null
        """
    )
    for table, columns in (("users", f"{users_cols}, applied_run_id"), ("memberships", members_cols)):
        con.execute(f"delete from audit.push_baseline_{table} where run_id = ?", [run_id])
        con.execute(
            f"""
            insert into audit.push_baseline_{table} (run_id, {columns})
            select ?, {columns} from state.applied_{table}
            where external_id in (select external_id from _push_changed)
            """,
            [run_id],
        )
    set_baseline_rows(
        con,
        "_push_changed",
        f"""
        select {users_cols}, ? as applied_run_id from intermediate.int_users_target_state
        where external_id in (select external_id from _push_changed)
        """,
        [run_id],
        f"""
        select distinct {members_cols} from intermediate.int_memberships_target_state
        where external_id in (select external_id from _push_changed)
        """,
    )
    con.execute("delete from audit.applied_changes where run_id = ?", [run_id])
    # An opt-out the store did not take (customized, or already opted out) was not applied.
    con.execute(
        """
        insert into audit.applied_changes
            (run_id, external_id, change_type, field, old_value, new_value, applied_at)
        select ?, c.external_id, c.change_type, c.field, c.old_value, c.new_value, ?
        from marts.user_changes as c
        where c.change_type <> 'opt_out'
           or c.external_id not in (
               select b.external_id from audit.applied_before as b
               where b.run_id = ? and b.user_row is not null
                 and (coalesce((b.user_row->>'email_prefs_customized')::boolean, false)
                      or coalesce((b.user_row->>'email_opt_out')::boolean, false)))
        order by c.change_id
        """,
        [run_id, now, run_id],
    )
    counts = dict(
        con.execute(
            """
            select change_type, count(distinct external_id)
            from audit.applied_changes where run_id = ? group by change_type
            """,
            [run_id],
        ).fetchall()
    )
    result = PushResult(
        creates=counts.get("create", 0),
        updates=counts.get("update", 0),
        reactivations=counts.get("reactivate", 0),
        deactivations=counts.get("deactivate", 0),
        deletes=counts.get("delete", 0),
        opt_outs=counts.get("opt_out", 0),
        batches=plan.batches,
    )
    con.execute(
        "insert into audit.push_runs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            plan.school_id,
            plan.batch_size,
            plan.batches,
            result.creates,
            result.updates,
            result.reactivations,
            result.deactivations,
            result.deletes,
            result.opt_outs,
            now,
        ],
    )
    return result
