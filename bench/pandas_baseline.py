"""The baseline: the same weekly job written by hand with pandas, as a team would without the pipeline.

Read this week's roster, validate it (ragged rows, required names, email syntax, duplicates), normalise
it (lowercased emails, the 8/31 graduation rule, user types, opt-out and delete flags, split and mapped
communities) and diff it against last week's normalised state. Last week's state is prepared first and
not timed, as a real job would keep it from the previous run.

    .venv/bin/python bench/pandas_baseline.py WEEK1.csv WEEK2.csv [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from sisbridge import sample_roster

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
YES = {"1", "yes", "true"}
USER_TYPES = {"undergraduate": "Undergraduate Students", "graduate": "Graduate Students", "alumni": "Alumni"}
FIELDS = ["email", "first_name", "last_name", "user_type", "graduation_year"]


def read_roster(path: Path) -> pd.DataFrame:
    """All cells as text; rows with too many fields are skipped.

    pandas pads a row with too few fields with empty cells, without a word: the baseline lets that
    pass, so it does a little less checking than the pipeline (which rejects such rows).
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip", encoding="utf-8")
    frame.columns = [c.strip().upper() for c in frame.columns]
    return frame


def graduation_year(text: pd.Series) -> pd.Series:
    """YYYY, or a date where 8/31 is the cutoff (a later date counts for the next year)."""
    text = text.str.strip()
    year = pd.to_numeric(text.where(text.str.fullmatch(r"\d{4}")), errors="coerce").astype("Float64")
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        date = pd.to_datetime(text, format=fmt, errors="coerce")
        after_cutoff = (date.dt.month > 8).astype("Int64")
        year = year.fillna(date.dt.year + after_cutoff)
    return year.astype("Int64")


def normalise(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Validated, normalised users (indexed by external id) and memberships of one roster file."""
    frame = read_roster(path)
    email = frame["EMAIL"].str.strip().str.lower()
    valid = (
        email.str.match(EMAIL)
        & (frame["FIRST_NAME"].str.strip() != "")
        & (frame["LAST_NAME"].str.strip() != "")
    )
    duplicated = email.duplicated(keep=False) & valid
    keep = valid & ~duplicated
    frame, email = frame[keep], email[keep]
    users = pd.DataFrame(
        {
            "email": email,
            "first_name": frame["FIRST_NAME"].str.strip(),
            "last_name": frame["LAST_NAME"].str.strip(),
            "user_type": frame["STAKEHOLDERS"].str.strip().str.lower().map(USER_TYPES),
            "graduation_year": graduation_year(frame["GRADUATION"]),
            "opt_out": frame["EMAIL_OPT_OUT"].str.strip().str.lower().isin(YES),
            "delete": frame["DELETE"].str.strip().str.lower().isin(YES),
        }
    ).set_index("email", drop=False)
    pieces = []
    for column, group, mapping in (
        ("PROGRAM", "Career Communities", sample_roster.BENCH_PROGRAMS),
        ("AFFINITY", "Affinity", None),
    ):
        values = frame[column].str.split(";").explode().str.strip()
        values = values[values != ""]
        community = values.map(mapping) if mapping else values
        pieces.append(
            pd.DataFrame({"external_id": email.loc[values.index], "group": group, "community": community})
        )
    memberships = pd.concat(pieces).dropna().drop_duplicates()
    memberships = memberships[~memberships["external_id"].isin(users.index[users["delete"]])]
    rejected = {"invalid": int((~valid).sum()), "duplicates": int(duplicated.sum())}
    return users, memberships, rejected


def membership_keys(memberships: pd.DataFrame) -> pd.Series:
    """One sorted, joined string of a user's memberships, so that two weeks compare per user."""
    keyed = memberships["group"] + "\x1f" + memberships["community"]
    return keyed.groupby(memberships["external_id"]).agg(lambda s: "\x1e".join(sorted(s)))


def state_after(users: pd.DataFrame, memberships: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The first week's applied state: users (not deleted), all active, and their membership keys."""
    kept = users[~users["delete"]].copy()
    kept["status"] = "active"
    return kept, membership_keys(memberships)


def diff(previous: pd.DataFrame, previous_keys: pd.Series, path: Path) -> dict:
    """This week's change set against last week's state: counts per change type and the changed users."""
    users, memberships, rejected = normalise(path)
    present = users[~users["delete"]]
    old = previous.reindex(present.index)
    existed = old["email"].notna()
    creates = present.index[~existed]
    both = present[existed]
    old_both = old[existed].astype({"opt_out": bool})
    field_changed = pd.Series(False, index=both.index)
    for field in FIELDS:
        field_changed |= both[field].astype(str) != old_both[field].astype(str)
    new_keys = membership_keys(memberships).reindex(both.index).fillna("")
    communities_changed = new_keys != previous_keys.reindex(both.index).fillna("")
    updates = both.index[field_changed | communities_changed]
    reactivations = both.index[old_both["status"] == "inactive"]
    opt_outs = both.index[both["opt_out"] & ~old_both["opt_out"]]
    deletes = users.index[users["delete"] & users.index.isin(previous.index)]
    missing = previous.index[(previous["status"] == "active") & ~previous.index.isin(users.index)]
    changed = set(creates) | set(updates) | set(reactivations) | set(opt_outs) | set(deletes) | set(missing)
    return {
        "creates": len(creates),
        "updates": len(updates),
        "reactivations": len(reactivations),
        "opt_outs": len(opt_outs),
        "deletes": len(deletes),
        "deactivations": len(missing),
        "changed_users": len(changed),
        "rejected": rejected,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("week1", type=Path)
    parser.add_argument("week2", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        # Last week's state, kept on disk between weekly runs (untimed).
        users, memberships, _ = normalise(args.week1)
        previous, keys = state_after(users, memberships)
        previous.to_pickle(Path(tmp) / "users.pkl")
        keys.to_pickle(Path(tmp) / "memberships.pkl")
        del users, memberships, previous, keys
        started = time.perf_counter()
        previous = pd.read_pickle(Path(tmp) / "users.pkl")
        keys = pd.read_pickle(Path(tmp) / "memberships.pkl")
        result = diff(previous, keys, args.week2)
        result["seconds"] = time.perf_counter() - started
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
