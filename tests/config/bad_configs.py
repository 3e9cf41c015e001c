"""School configs that break the rules, each with the words its error must contain (file and key)."""

from __future__ import annotations

GOOD = """\
school_id: quay
name: Quay College
s3: {bucket: uconnect-sis-quay, key: roster.csv, aws_conn_id: sis_s3_quay}
identifier: user_id
"""
TWO_COLUMNS_ONE_GROUP = """\
communities:
  - {column: MAJOR, group: Career Communities}
  - {column: PROGRAM, group: Career Communities}
"""

# id: (the YAML, what the one-line error names after the file)
BAD_CONFIGS = {
    "unknown-key": (GOOD + "auto_synk: true\n", "auto_synk: Extra inputs are not permitted"),
    "unknown-nested-key": (
        GOOD + "thresholds: {max_removed_pctt: 3}\n",
        "thresholds.max_removed_pctt: Extra inputs are not permitted",
    ),
    "unknown-key-in-a-list": (
        GOOD + "communities:\n  - {column: AFFINITY, group: Clubs, colour: red}\n",
        "communities.0.colour: Extra inputs are not permitted",
    ),
    "key-twice": (
        GOOD + "missing_users: keep\nmissing_users: delete\n",
        "missing_users: given twice, on lines 5 and 6; keep one",
    ),
    "group-twice": (
        GOOD + TWO_COLUMNS_ONE_GROUP,
        "communities.1.group: PROGRAM and MAJOR both feed the group 'Career Communities'; "
        "each community group has exactly one column",
    ),
    "alias-typo": (
        GOOD + 'header_aliases: {"Given Name": FIRSTNAME}\n',
        "header_aliases.Given Name: the target 'FIRSTNAME' is neither a standard column",
    ),
}
