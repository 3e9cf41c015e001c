"""The SQL fast path for EMAIL never accepts an address that email-validator refuses.

Only the addresses the fast path leaves over go through email-validator, so an address it wrongly
accepted would reach the store unchecked. These tests hold the fast path to a strict subset of
`email_problem(value) is None`: on generated addresses near every rule's edge, and on every string of
the email and naughty-string corpora.
"""

from __future__ import annotations

import json
import string
import xml.etree.ElementTree as ET

import duckdb
import pytest
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from sisbridge import normalize
from sisbridge.quality import email_problem, emails_to_check
from tests.corpora import CORPORA


@pytest.fixture(scope="module")
def duck():
    connection = duckdb.connect()
    yield connection
    connection.close()


def fast_path(con, values: list[str]) -> list[str]:
    """The trimmed, non-blank values that the fast path accepts without asking email-validator."""
    con.execute("create or replace temp table addresses (email varchar)")
    con.executemany("insert into addresses values (?)", [[value] for value in values])
    present = con.execute(f"select distinct {normalize.clean_sql('email')} from addresses").fetchall()
    checked = set(emails_to_check(con, "addresses"))
    return sorted(value for (value,) in present if value is not None and value not in checked)


def wrongly_accepted(con, values: list[str]) -> list[tuple[str, str]]:
    return [(value, email_problem(value)) for value in fast_path(con, values) if email_problem(value)]


def _corpus_strings() -> list[str]:
    root = ET.parse(CORPORA / "isemail" / "tests.xml").getroot()
    # The isemail corpus writes control characters as U+2400 + their code.
    isemail = [
        "".join(chr(ord(ch) - 0x2400) if 0x2400 <= ord(ch) < 0x2420 else ch for ch in address)
        for address in (test.findtext("address") or "" for test in root.iter("test"))
    ]
    naughty = json.loads((CORPORA / "naughty-strings" / "blns.json").read_text(encoding="utf-8"))
    return [value.replace("\x00", "") for value in isemail + naughty]


def test_typical_addresses_take_the_fast_path(duck):
    typical = ["ann.lee@acme.edu", "A_B-C+tag@Mail.Sub-Domain.Example.COM", "  bob99@uni.ac.uk  "]
    assert fast_path(duck, typical) == [
        "A_B-C+tag@Mail.Sub-Domain.Example.COM",
        "ann.lee@acme.edu",
        "bob99@uni.ac.uk",
    ]


@pytest.mark.parametrize(
    "address",
    [
        "ann@acme.local",
        "ann@mail.acme.LOCALHOST",
        "ann@Test",
        "ann@acme.TEST",
        "ann@xn--bcher-kva.ch",
        "ann@ab--cd.com",
        "ann@acme.edu1",
        "ann@acme.e",
        "ann..lee@acme.edu",
        ".ann@acme.edu",
        "ann.@acme.edu",
        "ann@-acme.edu",
        "ann@acme-.edu",
        "ann@acme..edu",
        "ann@acme.edu.",
        "ann lee@acme.edu",
        "ann@acme.edu\u3000x",
        "\u00e9l\u00e8ve@acme.edu",
        "ann@\u00e9cole.fr",
        "ann!#$%&'*/=?^`{|}~@acme.edu",
        '"ann"@acme.edu',
        "ann@[10.0.0.1]",
        "Ann <ann@acme.edu>",
        "a" * 65 + "@acme.edu",
        "ann@" + "a" * 64 + ".edu",
        "ann@" + ".".join(["a" * 60] * 5) + ".edu",
    ],
)
def test_unusual_addresses_go_to_email_validator(duck, address):
    # Some of these are valid, some are not: email-validator decides, and its message is the one shown.
    assert fast_path(duck, [address]) == []


def test_no_address_of_the_corpora_is_wrongly_accepted(duck):
    strings = _corpus_strings()
    addresses = [
        *strings,
        *(f"{value}@acme.edu" for value in strings),
        *(f"ann@{value}.edu" for value in strings),
        *(f"ann@acme.{value}" for value in strings),
    ]
    assert len(strings) > 600
    assert wrongly_accepted(duck, addresses) == []


def test_every_special_use_name_is_left_to_email_validator(duck):
    names = [name for name in SPECIAL_USE_DOMAIN_NAMES if "." not in name]
    addresses = [f"ann@acme.{name}" for name in names] + [f"ann@acme.{name.upper()}" for name in names]
    assert fast_path(duck, addresses) == []


_ATOM = st.text(alphabet=string.ascii_letters + string.digits + "_+-", min_size=1, max_size=12)
_LABEL = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=8), min_size=1, max_size=3
)
_TLD = st.one_of(
    st.text(alphabet=string.ascii_letters, min_size=2, max_size=6),
    st.sampled_from([*SPECIAL_USE_DOMAIN_NAMES, "LOCAL", "Test", "Onion", "e", "co1", "xn--p1ai"]),
)
# Characters that break one rule or another when dropped into an otherwise plain address.
_BREAKERS = st.sampled_from(
    [".", "-", "--", "@", " ", "\t", "\u00a0", '"', "(", "é", "!", "xn--", "_", "\u0301"]
)


@st.composite
def _addresses(draw) -> str:
    """Plain addresses (the fast path's own shape), and the same with one character dropped in."""
    local = ".".join(draw(st.lists(_ATOM, min_size=1, max_size=3)))
    labels = ["-".join(parts) for parts in draw(st.lists(_LABEL, min_size=1, max_size=4))]
    address = f"{local}@{'.'.join([*labels, draw(_TLD)])}"
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(address)))
        address = address[:at] + draw(_BREAKERS) + address[at:]
    return draw(st.sampled_from(["", " ", "\u3000"])) + address


_ADDRESS = st.one_of(_addresses(), st.text(max_size=80), st.text(alphabet="aA0.-@_+", max_size=30))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(address=_ADDRESS)
def test_the_fast_path_never_accepts_what_email_validator_refuses(duck, address):
    assume("\x00" not in address)
    accepted = fast_path(duck, [address])
    event("fast path" if accepted else "email-validator")
    assert wrongly_accepted(duck, [address]) == []


def _domain(length: int) -> str:
    """A domain of exactly `length` characters: labels as even as can be (at most 63), then `.edu`."""
    before_tld = length - len(".edu")
    count = -(-(before_tld + 1) // 64)
    letters = before_tld - (count - 1)
    sizes = [letters // count + (i < letters % count) for i in range(count)]
    domain = ".".join("d" * size for size in sizes) + ".edu"
    assert len(domain) == length and max(sizes) <= 63
    return domain


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_length_limits_hold_at_their_edges(duck, extra):
    addresses = [
        f"{'l' * (64 + extra)}@acme.edu",  # local part: 64
        f"ann@{'d' * (63 + extra)}.edu",  # one label: 63
        # address: 254 (so a domain never reaches its own limit of 253)
        f"{'l' * 60}@{_domain(193 + extra)}",
        f"a@{_domain(252 + extra)}",
    ]
    assert wrongly_accepted(duck, addresses) == []
    if extra <= 0:
        assert len(fast_path(duck, addresses)) == len(addresses)
