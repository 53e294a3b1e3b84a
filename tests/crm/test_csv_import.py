"""Contact CSV import: encodings, delimiters, vendor headers, per-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ErrorKind
from crm.rules.csv_import import (
    ACCEPTED_HEADERS,
    ContactRow,
    CsvField,
    CsvImportError,
    ParsedCsv,
    RowError,
    RowProblem,
    open_contacts_csv,
    parse_contacts_csv,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "csv"


def parse_fixture(name: str) -> ParsedCsv:
    return parse_contacts_csv((FIXTURES / name).read_bytes())


def test_hubspot_comma_export() -> None:
    parsed = parse_fixture("hubspot_comma.csv")
    assert parsed.errors == ()
    assert parsed.delimiter == ","
    assert parsed.encoding == "utf-8"
    assert parsed.rows == (
        ContactRow(
            email="jane.doe@acme.com",
            first_name="Jane",
            last_name="Doe",
            full_name="Jane Doe",
            company="Acme, Inc.",
            company_domain="acme.com",
            phone="+1 555 0100",
            owner_email="owner@ourco.com",
            line=2,
        ),
        ContactRow(
            email="joe@globex.com",
            first_name="Joe",
            last_name="Bloggs",
            full_name="Joe Bloggs",
            company="Globex",
            company_domain="globex.com",
            phone=None,
            owner_email=None,  # HubSpot exports the owner's name: not an address, dropped
            line=3,
        ),
    )
    assert dict(parsed.columns) == {
        CsvField.FIRST_NAME: "First Name",
        CsvField.LAST_NAME: "Last Name",
        CsvField.EMAIL: "Email",
        CsvField.COMPANY: "Company Name",
        CsvField.PHONE: "Phone Number",
        CsvField.OWNER_EMAIL: "Contact owner",
        CsvField.COMPANY_DOMAIN: "Website URL",
    }


HELENE = ContactRow(
    email="helene.lefevre@societe-generale.fr",
    first_name="Hélène",
    last_name="Lefèvre",
    full_name="Hélène Lefèvre",
    company="Société Générale",
    company_domain="societe-generale.fr",
    phone="01 23 45 67 89",
    owner_email="bob@ourco.fr",
    line=2,
)
FRANCOIS = ContactRow(
    email="francois@exemple.fr",
    first_name="François",
    last_name="Dœuf",
    full_name="François Dœuf",
    company="Crème & Cie",
    line=3,
)


@pytest.mark.parametrize(
    ("fixture", "encoding"),
    [("excel_fr_semicolon_cp1252.csv", "cp1252"), ("excel_fr_semicolon_utf8_bom.csv", "utf-8-sig")],
)
def test_french_excel_semicolon_export(fixture: str, encoding: str) -> None:
    parsed = parse_fixture(fixture)
    assert (parsed.encoding, parsed.delimiter) == (encoding, ";")
    assert parsed.errors == ()
    assert parsed.rows == (HELENE, FRANCOIS)


def test_outlook_export_with_bom() -> None:
    parsed = parse_fixture("outlook_utf8_bom.csv")
    assert parsed.encoding == "utf-8-sig"
    assert parsed.rows == (
        ContactRow(
            email="jane@acme.com",
            first_name="Jane",
            last_name="Doe",
            full_name="Jane Doe",
            company="Acme",
            phone="555 0100",
            line=2,
        ),
    )
    assert dict(parsed.columns)[CsvField.EMAIL] == "E-mail Address"


def test_google_export_falls_back_to_second_email_column_and_splits_full_name() -> None:
    parsed = parse_fixture("google_contacts.csv")
    assert parsed.errors == ()
    assert [(r.email, r.first_name, r.last_name, r.full_name, r.company) for r in parsed.rows] == [
        ("jane@acme.com", "Jane", "Doe", "Jane Doe", "Acme"),
        ("joe@globex.com", "Joe", "Bloggs", "Joe Bloggs", "Globex"),
    ]


def test_bad_rows_are_reported_with_their_file_line() -> None:
    parsed = parse_fixture("bad_rows.csv")
    assert [(row.line, row.email, row.full_name) for row in parsed.rows] == [
        (2, "jane@acme.com", "Jane Doe"),
        (7, "joe@globex.com", "Joe Bloggs"),
        (12, "mary@initech.com", None),
        (13, "ann@initech.com", "Ann"),
    ]
    assert [(error.line, error.code) for error in parsed.errors] == [
        (3, RowProblem.INVALID_EMAIL),
        (4, RowProblem.MISSING_EMAIL),
        (6, RowProblem.DUPLICATE_EMAIL),
        (9, RowProblem.INVALID_EMAIL),
        (10, RowProblem.DUPLICATE_EMAIL),
    ]
    reasons = {error.line: error.reason for error in parsed.errors}
    assert reasons[3].startswith("invalid email 'not-an-email'")
    assert reasons[4] == "missing email"
    assert reasons[6] == "duplicate email jane@acme.com (first on line 2)"
    assert reasons[9].startswith("invalid email 'joe@@globex.com'")
    assert reasons[10] == "duplicate email joe@globex.com (first on line 7)"


def test_missing_email_column_is_a_file_level_error() -> None:
    with pytest.raises(CsvImportError) as raised:
        parse_fixture("no_email_column.csv")
    assert raised.value.code == "csv_no_email_column"
    assert raised.value.fields["columns"] == ["First Name", "Last Name", "Company", "Phone"]
    assert raised.value.fields["line"] == 1 and "Email" in raised.value.fields["accepted"]
    message = str(raised.value)
    assert '"First Name", "Last Name", "Company", "Phone"' in message
    for accepted in ("Email", "E-mail", "Email address", "E-mail address", "Work email", "Email 1"):
        assert f'"{accepted}"' in message


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"  \r\n\r\n"])
def test_empty_file(data: bytes) -> None:
    with pytest.raises(CsvImportError, match="empty") as raised:
        parse_contacts_csv(data)
    assert raised.value.code == "csv_empty" and raised.value.kind is ErrorKind.INVALID


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("email", CsvField.EMAIL),
        ("E-Mail", CsvField.EMAIL),
        ("email_address", CsvField.EMAIL),
        ("E-mail Address", CsvField.EMAIL),
        ("WORK EMAIL", CsvField.EMAIL),
        ("Email 1", CsvField.EMAIL),
        ("first_name", CsvField.FIRST_NAME),
        ("Given Name", CsvField.FIRST_NAME),
        ("prénom", CsvField.FIRST_NAME),
        ("PRENOM", CsvField.FIRST_NAME),
        ("last-name", CsvField.LAST_NAME),
        ("Surname", CsvField.LAST_NAME),
        ("Family Name", CsvField.LAST_NAME),
        ("Nom", CsvField.LAST_NAME),
        ("name", CsvField.FULL_NAME),
        ("Full Name", CsvField.FULL_NAME),
        ("contact_name", CsvField.FULL_NAME),
        ("Company", CsvField.COMPANY),
        ("company name", CsvField.COMPANY),
        ("Organization", CsvField.COMPANY),
        ("Organisation", CsvField.COMPANY),
        ("Account Name", CsvField.COMPANY),
        ("Société", CsvField.COMPANY),
        ("phone", CsvField.PHONE),
        ("Phone Number", CsvField.PHONE),
        ("Telephone", CsvField.PHONE),
        ("Mobile", CsvField.PHONE),
        ("owner", CsvField.OWNER_EMAIL),
        ("Contact Owner", CsvField.OWNER_EMAIL),
        ("owner_email", CsvField.OWNER_EMAIL),
        ("domain", CsvField.COMPANY_DOMAIN),
        ("Website", CsvField.COMPANY_DOMAIN),
    ],
)
def test_header_variants(header: str, field: CsvField) -> None:
    email_header = "" if field is CsvField.EMAIL else ",Email"
    value = {
        CsvField.EMAIL: "a@acme.com",
        CsvField.OWNER_EMAIL: "Owner@OurCo.com",
        CsvField.COMPANY_DOMAIN: "http://www.acme.com",
    }.get(field, "Value")
    email_value = "" if field is CsvField.EMAIL else ",a@acme.com"
    parsed = parse_contacts_csv(f"{header}{email_header}\n{value}{email_value}\n".encode())
    assert dict(parsed.columns)[field] == header
    (row,) = parsed.rows
    expected = {
        CsvField.EMAIL: "a@acme.com",
        CsvField.OWNER_EMAIL: "owner@ourco.com",
        CsvField.COMPANY_DOMAIN: "acme.com",
    }.get(field, "Value")
    assert getattr(row, field.value) == expected


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters(delimiter: str) -> None:
    text = delimiter.join(["Email", "Name", "Company"]) + "\n"
    text += delimiter.join(["jane@acme.com", '"Doe, Jane"', '"Acme; Ltd"']) + "\n"
    parsed = parse_contacts_csv(text.encode())
    assert parsed.delimiter == delimiter
    (row,) = parsed.rows
    assert (row.email, row.first_name, row.last_name, row.company) == (
        "jane@acme.com",
        "Jane",
        "Doe",
        "Acme; Ltd",
    )


def test_semicolon_file_whose_values_contain_commas() -> None:
    data = "Email;Name;Company\njane@acme.com;Doe, Jane;Acme, Inc.\njoe@acme.com;Joe, Bloggs;Acme, Inc.\n"
    parsed = parse_contacts_csv(data.encode())
    assert parsed.delimiter == ";"
    assert [row.company for row in parsed.rows] == ["Acme, Inc.", "Acme, Inc."]


def test_latin1_fallback_for_bytes_cp1252_cannot_decode() -> None:
    data = "Email,Name\njane@acme.com,Jane\x81Doe\n".encode("latin-1")
    parsed = parse_contacts_csv(data)
    assert parsed.encoding == "latin-1"
    assert parsed.rows[0].full_name == "Jane\x81Doe"


def test_utf16_excel_unicode_text() -> None:
    data = "Email\tName\r\njane@acme.com\tJane Doe\r\n".encode("utf-16")
    parsed = parse_contacts_csv(data)
    assert (parsed.encoding, parsed.delimiter) == ("utf-16", "\t")
    assert parsed.rows[0].email == "jane@acme.com"


def test_primary_email_column_wins_over_secondary_wherever_it_is() -> None:
    parsed = parse_contacts_csv(b"Email 2,Name,Email\nold@acme.com,Jane,jane@acme.com\nold@globex.com,Joe,\n")
    assert dict(parsed.columns)[CsvField.EMAIL] == "Email"
    assert [row.email for row in parsed.rows] == ["jane@acme.com", "old@globex.com"]


def test_rows_shorter_or_longer_than_header() -> None:
    parsed = parse_contacts_csv(b"Name,Email,Phone\nJane Doe,jane@acme.com\nJoe,joe@acme.com,555,extra\n")
    assert [(row.email, row.phone) for row in parsed.rows] == [
        ("jane@acme.com", None),
        ("joe@acme.com", "555"),
    ]


def test_test_domains_need_opt_in() -> None:
    data = b"Email\njane@acme.test\n"
    assert parse_contacts_csv(data).errors[0].line == 2
    assert parse_contacts_csv(data, allow_test_domains=True).rows[0].email == "jane@acme.test"


def test_internationalized_email_is_normalized_and_lower_cased() -> None:
    parsed = parse_contacts_csv("Email\nJosé@Exemple.FR\n".encode())
    assert parsed.rows[0].email == "josé@exemple.fr"


def test_accepted_headers_cover_every_field() -> None:
    assert set(ACCEPTED_HEADERS) == set(CsvField)
    assert RowError(2, "x") == RowError(line=2, reason="x")


def test_stream_gives_the_rows_and_errors_of_the_whole_parse_in_file_order() -> None:
    """Issue 12.11: a file is read row by row (an import writes it in chunks); the stream says
    how far it got, for a progress bar."""
    data = (FIXTURES / "hubspot_comma.csv").read_bytes() + b"\nnot-an-address,X\n,\n"
    whole = parse_contacts_csv(data)
    stream = open_contacts_csv(data)
    assert (stream.encoding, stream.delimiter, stream.columns) == (
        whole.encoding,
        whole.delimiter,
        whole.columns,
    )
    positions, entries = [], []
    for entry in stream.entries:
        entries.append(entry)
        positions.append(stream.position)
    assert [e for e in entries if isinstance(e, ContactRow)] == list(whole.rows)
    assert [e for e in entries if isinstance(e, RowError)] == list(whole.errors)
    assert [e.line for e in entries] == sorted(e.line for e in entries)
    assert positions == sorted(positions) and positions[-1] < stream.position == stream.size  # a blank line


def test_stream_refuses_a_bad_file_before_the_first_row() -> None:
    with pytest.raises(CsvImportError) as refused:
        open_contacts_csv(b"Name;Phone\nA;1\n")
    assert refused.value.code == "csv_no_email_column"
