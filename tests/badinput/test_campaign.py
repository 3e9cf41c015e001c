"""The bad-input campaign: whatever a school uploads, `sisbridge check` and the loader answer calmly.

Every input must be accepted, or rejected with at least one error that says why; nothing may raise.
Files that the checks reject are then run through the DAG's own stages (load, validate, and only if
those pass: transform, guard, push) against a seeded store, which must not change.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import tempfile
from pathlib import Path

import duckdb
import lakes
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sisbridge import audit, cli, loading, locals3, pipeline, sample_roster, transform, userstore, warehouse
from sisbridge.config import load_school
from tests.corpora import CORPORA

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = CORPORA
SCHOOL = load_school(PROJECT_ROOT / "tests" / "data" / "schools" / "northwind.yaml")
HEADER = ["FIRST_NAME", "LAST_NAME", "EMAIL", "GRADUATION", "STAKEHOLDERS", "PROGRAM", "AFFINITY"]
NAUGHTY = json.loads((FIXTURES / "naughty-strings" / "blns.json").read_text(encoding="utf-8"))
# Every data file of every corpus; not the README, checksums and licences beside them.
FIXTURE_FILES = sorted(
    path
    for path in FIXTURES.rglob("*")
    if path.is_file() and path.parent != FIXTURES and not path.name.startswith("LICENSE")
)
VERDICT = re.compile(r"^(?P<name>.+): (?P<verdict>ACCEPTED|REJECTED)$")
ERROR_COUNT = re.compile(r"^\d+ findings?: (?P<errors>\d+) errors?, \d+ warnings?$")
# An accepted file costs a dbt build in `sisbridge check`: keep the example counts moderate.
CAMPAIGN = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_roster(count: int = 20) -> bytes:
    return sample_roster.roster_csv(SCHOOL, sample_roster.students(SCHOOL, count), bad_rows=False)


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows([header, *rows])
    return buffer.getvalue().encode("utf-8")


def run_check(path: Path) -> tuple[int, str]:
    """`sisbridge check FILE --school northwind`, as a user runs it; returns exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", str(path), "--school", SCHOOL.school_id])
    return code, out.getvalue() + err.getvalue()


def assert_answered(path: Path) -> bool:
    """Check the file and the loader; return True when it was accepted. Raises on any other outcome."""
    code, output = run_check(path)
    lines = output.splitlines()
    verdict = VERDICT.match(lines[0]) if lines else None
    assert verdict and verdict["name"] == path.name, output[:2000]
    assert code == (0 if verdict["verdict"] == "ACCEPTED" else 1), output[:2000]
    if code == 1:
        errors = [int(m["errors"]) for m in map(ERROR_COUNT.match, lines) if m]
        examples = [line for line in lines if line.startswith(("  line ", "  file: "))]
        assert errors and errors[0] >= 1 and examples, f"rejected without a reason:\n{output[:2000]}"

    con = duckdb.connect(":memory:")
    try:
        audit.ensure_schema(con)
        result = loading.load_file(path, SCHOOL, con, file_name=path.name, run_id="campaign")
        loaded = con.execute("select count(*) from raw.roster").fetchone()[0]
    finally:
        con.close()
    assert result.rows_loaded == loaded <= result.rows_in_file
    if result.rejected:
        assert loaded == 0 and code == 1
        assert [f for f in result.findings if f.severity == "error" and f.message.strip()]
    return code == 0


def check_bytes(content: bytes, name: str = "roster.csv") -> bool:
    with tempfile.TemporaryDirectory(prefix="campaign-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        return assert_answered(path)


@CAMPAIGN
@given(st.binary(max_size=4096))
def test_random_bytes(content):
    check_bytes(content)


@CAMPAIGN
@given(st.binary(min_size=1, max_size=64), st.booleans())
def test_random_bytes_after_a_valid_header(tail, crlf):
    newline = b"\r\n" if crlf else b"\n"
    check_bytes(b",".join(h.encode() for h in HEADER) + newline + tail)


@FEW
@given(st.data())
def test_truncated_files(data):
    content = valid_roster()
    cut = data.draw(st.integers(min_value=0, max_value=len(content) - 1))
    check_bytes(content[:cut])


@CAMPAIGN
@given(
    st.lists(
        st.lists(st.sampled_from(NAUGHTY), min_size=len(HEADER), max_size=len(HEADER)), min_size=1, max_size=8
    )
)
def test_naughty_strings_in_every_column(rows):
    check_bytes(csv_bytes(rows))


@FEW
@given(st.lists(st.sampled_from(NAUGHTY), min_size=1, max_size=6))
def test_naughty_strings_as_header_names(names):
    header = ["FIRST_NAME", "LAST_NAME", "EMAIL", *names]
    check_bytes(csv_bytes([["Ada", "Lovelace", "ada@northwind.edu", *names]], header))


def extreme_files() -> dict[str, bytes]:
    wide = ["FIRST_NAME", "LAST_NAME", "EMAIL", *(f"EXTRA_{n}" for n in range(9_997))]
    megabyte = "x" * 1_048_576
    return {
        "header_10000_columns.csv": csv_bytes(
            [["Ada", "Lovelace", "ada@northwind.edu", *([""] * 9_997)]], wide
        ),
        "header_10000_columns_short_rows.csv": csv_bytes([["Ada", "Lovelace", "ada@northwind.edu"]], wide),
        "field_1mb_name.csv": csv_bytes(
            [[megabyte, "Lovelace", "ada@northwind.edu", "2026", "Undergraduate", "", ""]]
        ),
        "field_1mb_quoted_lines.csv": csv_bytes(
            [["Ada", "Lovelace", "ada@northwind.edu", "2026", "Undergraduate", ('a,"b"\r\n' * 131_072), ""]]
        ),
        "field_1mb_community_values.csv": csv_bytes(
            [
                [
                    "Ada",
                    "Lovelace",
                    "ada@northwind.edu",
                    "2026",
                    "Undergraduate",
                    "",
                    ";".join(["Club"] * 200_000),
                ]
            ]
        ),
        "header_1mb.csv": megabyte.encode() + b"\r\nAda\r\n",
    }


# The full 10,000-column file has its own test below, with the exact warnings.
@pytest.mark.parametrize("name", sorted(set(extreme_files()) - {"header_10000_columns.csv"}))
def test_extreme_shapes(name):
    check_bytes(extreme_files()[name], name)


def test_a_10000_column_header_is_accepted_with_one_warning_per_unknown_column(tmp_path):
    path = tmp_path / "header_10000_columns.csv"
    path.write_bytes(extreme_files()[path.name])

    code, output = run_check(path)

    assert code == 0, output[:2000]
    assert "unknown_column (warning): 9997" in output.splitlines()
    assert "  ... and 9994 more" in output.splitlines()


def test_a_10000_column_file_that_duckdb_refuses_is_read_by_python_within_the_memory_limit(tmp_path):
    # A record over DuckDB's 2 MB line limit sends the loader to Python's csv module, under the same
    # memory limit as the DuckDB path (the default 1 GB).
    wide = ["FIRST_NAME", "LAST_NAME", "EMAIL", *(f"EXTRA_{n}" for n in range(9_997))]
    record = ["Ada", "Lovelace", "ada@northwind.edu", "x" * 2_100_000, *([""] * 9_996)]
    path = tmp_path / "header_10000_columns_long_record.csv"
    path.write_bytes(csv_bytes([record], wide))

    code, output = run_check(path)

    assert code == 0, output[:2000]
    assert "unknown_column (warning): 9997" in output.splitlines()
    # As `sisbridge check` loads it: into a scratch DuckDB file.
    with warehouse.connect(SCHOOL.school_id, lake=warehouse.scratch_settings(tmp_path)) as con:
        result = loading.load_file(path, SCHOOL, con, file_name=path.name)
        loaded = con.execute("select line_number, first_name, last_name, email from raw.roster").fetchall()
    assert (result.rows_loaded, loaded) == (1, [(2, "Ada", "Lovelace", "ada@northwind.edu")])


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_corpus_file(path):
    assert_answered(path)


# --- A rejected file never changes the store -----------------------------------------------------


def rejected_samples() -> dict[str, bytes]:
    """Files the campaign school must reject: the corpus files lack its required columns."""
    samples = {f"fixture_{p.parent.name}_{p.name}": p.read_bytes() for p in FIXTURE_FILES}
    extreme = extreme_files()
    samples["header_10000_columns_short_rows.csv"] = extreme["header_10000_columns_short_rows.csv"]
    samples["header_1mb.csv"] = extreme["header_1mb.csv"]
    samples["truncated_in_a_quote.csv"] = valid_roster()[:200] + b'"unterminated'
    samples["random_bytes.bin"] = bytes(range(256)) * 8
    return samples


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, pg_module_url):
    """The campaign school, a local S3 bucket, and a PostgreSQL store holding the school's users."""
    folder = tmp_path_factory.mktemp("schools")
    config = yaml.safe_load((PROJECT_ROOT / "tests" / "data" / "schools" / "northwind.yaml").read_text())
    config.update(
        school_id="campaign",
        s3={"bucket": "uconnect-sis-campaign", "key": "roster.csv", "aws_conn_id": "sis_s3_campaign"},
    )
    (folder / "campaign.yaml").write_text(yaml.safe_dump(config))
    engine = userstore.store_engine(pg_module_url)
    userstore.ensure_schema(engine)
    with engine.begin() as conn:
        for number in range(5):
            conn.execute(
                sa.text(
                    "insert into users (school_id, external_id, email, first_name, last_name, status, "
                    "email_opt_out, email_prefs_customized, created_at, updated_at) values "
                    "('campaign', :e, :e, 'Kept', 'Student', 'active', false, false, "
                    "timestamp '2026-01-01 00:00:00', timestamp '2026-01-01 00:00:00')"
                ),
                {"e": f"kept{number}@northwind.edu"},
            )
    with pytest.MonkeyPatch.context() as patch, locals3.local_s3() as endpoint:
        patch.setenv("SISBRIDGE_SCHOOLS_DIR", str(folder))
        s3 = locals3.s3_client(endpoint)
        locals3.create_bucket(s3, "uconnect-sis-campaign")
        yield s3, engine
    engine.dispose()


def store_snapshot(engine: sa.Engine) -> tuple[list, list]:
    with engine.connect() as conn:
        users = sorted(tuple(r) for r in conn.execute(sa.text("select * from users")))
        members = sorted(tuple(r) for r in conn.execute(sa.text("select * from user_communities")))
    return users, members


def run_stages(s3, engine, run_id: str) -> str:
    """The DAG's stages in order, stopping where the DAG would skip the rest; returns the run status."""
    # force: a sample whose content an earlier sample had is read again, never "unchanged".
    outcome = pipeline.load_raw("campaign", run_id, None, s3=s3, force=True)
    if not outcome.stop:
        outcome = pipeline.validate("campaign", run_id, s3=s3)
    if not outcome.stop:
        transform.run_build(pipeline.school_config("campaign"), run_id)
        outcome = pipeline.guard("campaign", run_id)
    if not outcome.stop:
        pipeline.push("campaign", run_id, engine=engine)
    return pipeline.finalize("campaign", run_id, s3=s3)["status"]


@pytest.mark.postgres
def test_rejected_files_never_change_the_store(seeded):
    s3, engine = seeded
    before = store_snapshot(engine)
    outcomes = {}
    lakes.wipe("campaign")
    for number, (name, content) in enumerate(sorted(rejected_samples().items())):
        s3.put_object(Bucket="uconnect-sis-campaign", Key="roster.csv", Body=content)
        run_id = f"campaign__{number:03d}"
        outcomes[name] = run_stages(s3, engine, run_id)
        with audit.warehouse("campaign", read_only=True) as con:
            reason = audit.get_run(con, run_id)["status_reason"]
        assert reason, name
        assert store_snapshot(engine) == before, name
    assert len(outcomes) >= 30
    assert set(outcomes.values()) == {"rejected"}, outcomes
