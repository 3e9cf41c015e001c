"""The weekly upkeep of each school's lake (the `sis_lake_maintenance` DAG).

Every run commits to the school's lake, and every commit is a lake snapshot with its own small files.
Left alone, a school's catalog and its data files grow with every week. The maintenance:
1. flushes rows inlined in the catalog into Parquet files;
2. merges adjacent small files;
3. expires the lake snapshots older than the school's `lake_retention_days` (default 90), so
   `sisbridge sql --as-of` reaches back that far and no further;
4. deletes the files no live snapshot references, and files nobody ever committed (a write that
   died), once they are a day old, so that no in-flight write loses its files.

Tables keep their own history: `snapshots.users_snapshot` (SCD2) and the `audit.*` tables keep every
row, whatever the retention.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sisbridge import warehouse
from sisbridge.config import load_school, schools_dir

log = logging.getLogger(__name__)

# A file the catalog does not know is left alone this long: it may belong to a write in progress.
ORPHAN_GRACE = timedelta(days=1)
# A sync that started this recently and has not finished is taken as still running.
RUN_WINDOW = timedelta(days=2)
_CATALOG_TABLES = (
    "ducklake_snapshot",
    "ducklake_snapshot_changes",
    "ducklake_data_file",
    "ducklake_delete_file",
    "ducklake_files_scheduled_for_deletion",
    "ducklake_file_column_stats",
    "ducklake_table",
    "ducklake_column",
)


@dataclass(frozen=True)
class LakeSize:
    """How big a school's lake is: what the maintenance keeps bounded."""

    snapshots: int
    # Data and delete files the catalog lists, live or kept for older snapshots.
    files: int
    # Rows in the catalog's main tables (its size, whatever the database).
    catalog_rows: int


def school_ids() -> list[str]:
    """Every configured school (the YAML file names): the lakes to maintain."""
    return sorted(path.stem for path in schools_dir().glob("*.yaml"))


def size(con, lake: warehouse.LakeSettings, school_id: str) -> LakeSize:
    """The lake's size, read from its catalog through the attached metadata database."""
    schema = lake.metadata_schema(school_id) if lake.kind == warehouse.POSTGRES else "main"
    meta = f'__ducklake_metadata_{warehouse.ALIAS}."{schema}"'

    def count(table: str) -> int:
        return con.execute(f"select count(*) from {meta}.{table}").fetchone()[0]

    return LakeSize(
        snapshots=count("ducklake_snapshot"),
        files=count("ducklake_data_file") + count("ducklake_delete_file"),
        catalog_rows=sum(count(table) for table in _CATALOG_TABLES),
    )


def running(con) -> bool:
    """Whether a sync of the school looks in progress (its last started run has not finished)."""
    row = con.execute(
        "select count(*) from audit.sync_runs where status = 'running' and started_at > ?",
        [datetime.now(UTC).replace(tzinfo=None) - RUN_WINDOW],
    ).fetchone()
    return bool(row and row[0])


def maintain(school_id: str, retention: timedelta, *, now: datetime | None = None) -> dict:
    """Compact, expire and clean one school's lake; returns its size before and after."""
    lake = warehouse.settings()
    now = now or datetime.now(UTC)
    con = warehouse.connect(school_id)
    try:
        if warehouse.has_table(con, "audit", "sync_runs") and running(con):
            log.info("maintenance of %s skipped: a sync is running", school_id)
            return {"school_id": school_id, "skipped": "a sync is running"}
        before = size(con, lake, school_id)
        alias = warehouse.ALIAS
        con.execute(f"call ducklake_flush_inlined_data('{alias}')")
        con.execute(f"call ducklake_merge_adjacent_files('{alias}')")
        con.execute(f"call ducklake_expire_snapshots('{alias}', older_than => ?)", [now - retention])
        con.execute(f"call ducklake_cleanup_old_files('{alias}', cleanup_all => true)")
        con.execute(f"call ducklake_delete_orphaned_files('{alias}', older_than => ?)", [now - ORPHAN_GRACE])
        after = size(con, lake, school_id)
    finally:
        con.close()
    log.info("maintenance of %s: %s -> %s", school_id, before, after)
    return {"school_id": school_id, "before": asdict(before), "after": asdict(after)}


def run(school_id: str) -> dict:
    """The DAG's task: maintain one school's lake with the retention its config sets."""
    school = load_school(schools_dir() / f"{school_id}.yaml")
    return maintain(school.school_id, timedelta(days=school.lake_retention_days))
