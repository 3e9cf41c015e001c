"""What counts as whitespace and as blank, and how an email, login or user ID becomes a key.

Every stage uses this one definition: the Python functions here (`clean`, `key`), the DuckDB
expressions built from the same character list (`clean_sql`, `key_sql`: loading, the quality gate,
the guards, the push) and dbt's `clean_text` and `text_key` macros, which are these same expressions
written into `dbt_project/macros/normalize.sql` by `python -m sisbridge.dbt_macros` (a test fails when
that file is not what it generates).

A value is trimmed of whitespace at both ends; what is left is blank when it is empty. Emails and
logins are compared trimmed and lowercased, user IDs trimmed only (DESIGN.md, the user store).
"""

from __future__ import annotations

# Every character Python's str.isspace() accepts (Unicode's White_Space property and the ASCII
# information separators), plus the invisible ones that spreadsheets and word processors leave in
# cells: MONGOLIAN VOWEL SEPARATOR (whitespace before Unicode 6.3), ZERO WIDTH SPACE, WORD JOINER and
# ZERO WIDTH NO-BREAK SPACE (a byte order mark pasted into a cell). Excel exports put NO-BREAK SPACE
# (U+00A0) in cells; it is whitespace here.
WHITESPACE = "".join(
    chr(code)
    for code in (
        *range(0x09, 0x0E),  # tab, line feed, vertical tab, form feed, carriage return
        *range(0x1C, 0x21),  # file, group, record and unit separators; space
        0x85,  # next line
        0xA0,  # no-break space
        0x1680,  # ogham space mark
        0x180E,  # mongolian vowel separator
        *range(0x2000, 0x200C),  # en quad .. hair space (figure space U+2007 among them), zero width space
        0x2028,  # line separator
        0x2029,  # paragraph separator
        0x202F,  # narrow no-break space
        0x205F,  # medium mathematical space
        0x2060,  # word joiner
        0x3000,  # ideographic space
        0xFEFF,  # zero width no-break space (byte order mark)
    )
)
# The identifier kinds whose keys ignore case (DESIGN.md: emails and logins are lowercased).
CASE_INSENSITIVE = frozenset({"email", "user_login"})
KINDS = ("email", "user_id", "user_login")


def trim(value: str) -> str:
    """`value` without whitespace at either end."""
    return value.strip(WHITESPACE)


def clean(value: str | None) -> str | None:
    """The trimmed value, or None when it is missing or blank."""
    if value is None:
        return None
    return value.strip(WHITESPACE) or None


def is_blank(value: str | None) -> bool:
    """True when the value is missing or holds only whitespace."""
    return clean(value) is None


def lower(value: str) -> str:
    """Lowercase exactly as DuckDB's lower() does, so Python and SQL keys agree.

    Python maps U+0130 (capital I with dot) to two characters, DuckDB to 'i'; every other character
    lowercases the same in both (the parity test runs the whole Unicode range).
    """
    return value.replace("\u0130", "i").lower()


def key(kind: str, value: str | None) -> str | None:
    """The key an `email`, `user_id` or `user_login` value is stored and compared by; None when blank."""
    if kind not in KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}; expected one of {', '.join(KINDS)}")
    cleaned = clean(value)
    if cleaned is None or kind not in CASE_INSENSITIVE:
        return cleaned
    return lower(cleaned)


def _ranges(codes: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    return runs


# The whitespace as an RE2 character class, ASCII only (\x{...} escapes), for DuckDB's regexp functions.
# A regular expression, not trim(value, characters): DuckDB's trim decodes its character list again for
# every row, which made it four times slower than this pattern at this list's length.
_CLASS = (
    "["
    + "".join(
        f"\\x{{{first:x}}}" if first == last else f"\\x{{{first:x}}}-\\x{{{last:x}}}"
        for first, last in _ranges(sorted(map(ord, WHITESPACE)))
    )
    + "]"
)
TRIM_PATTERN = f"^{_CLASS}+|{_CLASS}+$"


def trim_sql(expression: str) -> str:
    """DuckDB SQL for `trim(expression)`: the value without whitespace at either end."""
    return f"regexp_replace({expression}, '{TRIM_PATTERN}', '', 'g')"


def clean_sql(expression: str) -> str:
    """DuckDB SQL for `clean(expression)`: trimmed, null when blank."""
    return f"nullif({trim_sql(expression)}, '')"


def key_sql(kind: str, expression: str) -> str:
    """DuckDB SQL for `key(kind, expression)`."""
    if kind not in KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}; expected one of {', '.join(KINDS)}")
    cleaned = clean_sql(expression)
    return f"lower({cleaned})" if kind in CASE_INSENSITIVE else cleaned
