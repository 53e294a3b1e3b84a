"""Parse contact exports from other CRMs (HubSpot, Salesforce, Pipedrive, Outlook, Google...).

Why this is its own pure module: imports fail on the file, not on the database. Real exports
come as UTF-8 with or without a BOM, as Windows-1252 from Excel, separated by commas, semicolons
(European Excel) or tabs, with each vendor's own column names. This module turns those bytes
into validated `ContactRow`s plus a `RowError` for every line it had to reject, with the line
number the user sees in a spreadsheet, so the caller can show a precise report before it writes
anything. A file without any email column is rejected as a whole (`CsvImportError`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import enum
import io
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parseaddr

from email_validator import EmailNotValidError, validate_email

from core.errors import InvalidInput
from crm.rules.linking import split_name

__all__ = [
    "ACCEPTED_HEADERS",
    "ContactRow",
    "CsvField",
    "CsvImportError",
    "CsvStream",
    "ParsedCsv",
    "RowError",
    "RowProblem",
    "open_contacts_csv",
    "parse_contacts_csv",
]

_SNIFF_CHARS = 8 * 1024  # csv.Sniffer's regexes get slow on big samples; a few rows suffice
_DELIMITERS = (",", ";", "\t")


class CsvImportError(InvalidInput):
    """The file as a whole cannot be imported: `csv_empty`, `csv_unreadable` (with the `line`)
    or `csv_no_email_column` (with the `columns` found and the `accepted` email headers)."""


class RowProblem(enum.StrEnum):
    """Why one line of a file was not imported (`RowError.code`)."""

    MISSING_EMAIL = "missing_email"
    INVALID_EMAIL = "invalid_email"
    DUPLICATE_EMAIL = "duplicate_email"
    EMAIL_IS_USER = "email_is_user"  # a user of the workspace is never a contact
    INVALID_DOMAIN = "invalid_domain"  # the company's domain was refused (taken, not a domain)


class CsvField(enum.StrEnum):
    EMAIL = "email"
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    FULL_NAME = "full_name"
    COMPANY = "company"
    COMPANY_DOMAIN = "company_domain"
    PHONE = "phone"
    OWNER_EMAIL = "owner_email"


# Header spellings per field, as users write them, compared after `_header_key` folding. When a
# file has several columns for one field, the spelling listed first wins.
ACCEPTED_HEADERS: dict[CsvField, tuple[str, ...]] = {
    CsvField.EMAIL: (
        "Email",
        "E-mail",
        "Email address",
        "E-mail address",
        "Work email",
        "Email 1",
        "E-mail 1 - Value",
        # Secondary addresses: used when the row's primary email cell is empty.
        "Email 2",
        "E-mail 2 - Value",
        "E-mail 2 Address",
        "Emails",
        "Primary email",
        "Business email",
        "Person - Email",
        "Mail",
        "Courriel",
        "Adresse e-mail",
        "Adresse mail",
        "E-Mail-Adresse",
    ),
    CsvField.FIRST_NAME: ("First name", "Given name", "Prénom", "Vorname", "First"),
    CsvField.LAST_NAME: (
        "Last name",
        "Surname",
        "Family name",
        "Nom",
        "Nachname",
        "Apellido",
        "Apellidos",
        "Last",
    ),
    CsvField.FULL_NAME: ("Name", "Full name", "Contact name", "Display name", "Person name", "Nom complet"),
    CsvField.COMPANY: (
        "Company",
        "Company name",
        "Organization",
        "Organisation",
        "Organization name",
        "Organisation name",
        "Organization 1 - Name",
        "Account name",
        "Société",
        "Entreprise",
        "Firma",
        "Empresa",
    ),
    CsvField.COMPANY_DOMAIN: (
        "Domain",
        "Website",
        "Company domain",
        "Company domain name",
        "Company website",
        "Website URL",
        "Site web",
    ),
    CsvField.PHONE: (  # earlier spellings win when a file has several phone columns
        "Phone",
        "Phone number",
        "Telephone",
        "Work phone",
        "Business phone",
        "Phone 1 - Value",
        "Téléphone",
        "Telefon",
        "Teléfono",
        "Mobile",
        "Mobile phone",
        "Cell phone",
    ),
    CsvField.OWNER_EMAIL: ("Owner", "Contact owner", "Owner email", "Propriétaire"),
}


def _header_key(header: str) -> str:
    """Fold a header for matching: no accents, no case, only letters and digits."""
    decomposed = unicodedata.normalize("NFKD", header)
    return "".join(ch for ch in decomposed.lower() if ch.isalnum() and not unicodedata.combining(ch))


# Folded header -> (field, rank): a lower rank is preferred when several columns map to a field.
_FIELD_BY_KEY: dict[str, tuple[CsvField, int]] = {
    _header_key(alias): (csv_field, rank)
    for csv_field, aliases in ACCEPTED_HEADERS.items()
    for rank, alias in enumerate(aliases)
}


@dataclass(frozen=True, slots=True)
class ContactRow:
    email: str  # normalized and lower-cased
    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    company: str | None = None
    company_domain: str | None = None
    phone: str | None = None
    owner_email: str | None = None
    line: int = 0  # where the row starts in the file (header = line 1)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # 1-based line in the file, header = line 1
    reason: str  # a sentence for people
    code: RowProblem | str = ""  # for programs: a `RowProblem`, or a service error's code


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    rows: tuple[ContactRow, ...]
    errors: tuple[RowError, ...]
    encoding: str = "utf-8"
    delimiter: str = ","
    columns: tuple[tuple[CsvField, str], ...] = ()  # each recognised field and the header used


def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel "Unicode text"
        return data.decode("utf-16", errors="replace"), "utf-16"
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _reader(text: str | io.StringIO, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line of the record, cells) for each non-blank record."""
    buffer = io.StringIO(text, newline="") if isinstance(text, str) else text
    reader = csv.reader(buffer, delimiter=delimiter, quotechar='"', strict=False)
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in record):
                yield start, record
    except csv.Error as exc:
        raise CsvImportError(
            "csv_unreadable", f"line {reader.line_num}: unreadable CSV ({exc})", line=reader.line_num
        ) from exc


def _map_columns(header: list[str]) -> dict[CsvField, list[int]]:
    """Column indexes per field, preferred first (alias rank, then position in the header)."""
    ranked: dict[CsvField, list[tuple[int, int]]] = {}
    for index, name in enumerate(header):
        match = _FIELD_BY_KEY.get(_header_key(name))
        if match is not None:
            ranked.setdefault(match[0], []).append((match[1], index))
    return {csv_field: [index for _, index in sorted(pairs)] for csv_field, pairs in ranked.items()}


def _first_record(text: str, delimiter: str) -> tuple[int, list[str]] | None:
    try:
        return next(_reader(text, delimiter), None)
    except CsvImportError:
        return None


def _choose_delimiter(text: str) -> str:
    """The sniffed delimiter when its header has an email column, else the first that does."""
    candidates: list[str] = []
    with contextlib.suppress(csv.Error):  # "Could not determine delimiter": try them all
        candidates.append(csv.Sniffer().sniff(text[:_SNIFF_CHARS], delimiters="".join(_DELIMITERS)).delimiter)
    candidates.extend(d for d in _DELIMITERS if d not in candidates)
    for delimiter in candidates:
        first = _first_record(text, delimiter)
        if first is not None and CsvField.EMAIL in _map_columns(first[1]):
            return delimiter
    return candidates[0]


def _cell(record: list[str], indexes: list[int] | None) -> str | None:
    """The first non-blank cell among a field's columns, trimmed."""
    for index in indexes or ():
        if index < len(record) and record[index].strip():
            return " ".join(record[index].split())
    return None


def _address_in(value: str) -> str:
    """Accept "mailto:x", "Name <x>" and "<x>" cells as the bare address."""
    value = value.strip()
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:") :].strip()
    if "<" in value:
        _, address = parseaddr(value)
        if address:
            return address
    return value


def _domain(value: str | None) -> str | None:
    """ "https://www.Acme.com/about" -> "acme.com"; None when it does not look like a domain."""
    if value is None:
        return None
    host = value.strip().lower()
    host = host.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = host.rsplit("@", 1)[-1].split(":", 1)[0].strip(".")
    host = host.removeprefix("www.")
    labels = host.split(".")
    if (
        len(labels) < 2
        or not all(labels)
        or any(not (c.isalnum() or c == "-") for c in host.replace(".", ""))
    ):
        return None
    return host


def _owner(value: str | None) -> str | None:
    """The owner's address; None when the cell is not one (some CRMs export the owner's name).
    Owners are users of the workspace, so test domains are accepted: an unknown owner is
    dropped later anyway."""
    if value is None:
        return None
    try:
        checked = validate_email(_address_in(value), check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return None
    return checked.normalized.lower()


@dataclass(slots=True)
class CsvStream:
    """A contacts file opened for reading row by row (`open_contacts_csv`): the file-level checks
    are done, `entries` yields each line's `ContactRow` or `RowError` in file order, and
    `position` says how many of the `size` characters of text were read (for a progress bar)."""

    entries: Iterator[ContactRow | RowError]
    encoding: str
    delimiter: str
    columns: tuple[tuple[CsvField, str], ...]
    size: int
    _buffer: io.StringIO

    @property
    def position(self) -> int:
        return self._buffer.tell()


def open_contacts_csv(data: bytes, *, allow_test_domains: bool = False) -> CsvStream:
    """Check a contacts CSV export as a whole and return its rows as a stream (see
    `parse_contacts_csv` for the rules). Only the text is held; rows are made as they are read,
    so a caller can write them in chunks.

    Raises `CsvImportError` when the file is empty, unreadable or has no email column.
    """
    text, encoding = _decode(data)
    if not text.strip():
        raise CsvImportError("csv_empty", "the file is empty", line=0)
    delimiter = _choose_delimiter(text)
    buffer = io.StringIO(text, newline="")
    records = _reader(buffer, delimiter)
    first = next(records, None)
    if first is None:
        raise CsvImportError("csv_empty", "the file is empty", line=0)
    header = first[1]
    columns = _map_columns(header)
    if CsvField.EMAIL not in columns:
        accepted = ", ".join(f'"{name}"' for name in ACCEPTED_HEADERS[CsvField.EMAIL])
        found = ", ".join(f'"{name.strip()}"' for name in header if name.strip())
        raise CsvImportError(
            "csv_no_email_column",
            f"no email column found (columns: {found or 'none'}); name one of: {accepted} "
            "(case, spaces, hyphens and underscores do not matter)",
            line=first[0],
            columns=[name.strip() for name in header if name.strip()],
            accepted=list(ACCEPTED_HEADERS[CsvField.EMAIL]),
        )
    return CsvStream(
        entries=_entries(records, columns, allow_test_domains),
        encoding=encoding,
        delimiter=delimiter,
        columns=tuple((csv_field, header[indexes[0]].strip()) for csv_field, indexes in columns.items()),
        size=len(text),
        _buffer=buffer,
    )


def _entries(
    records: Iterator[tuple[int, list[str]]], columns: dict[CsvField, list[int]], allow_test_domains: bool
) -> Iterator[ContactRow | RowError]:
    first_line_of: dict[str, int] = {}
    for line, record in records:
        raw_email = _cell(record, columns[CsvField.EMAIL])
        if raw_email is None:
            yield RowError(line, "missing email", RowProblem.MISSING_EMAIL)
            continue
        try:
            validated = validate_email(
                _address_in(raw_email), check_deliverability=False, test_environment=allow_test_domains
            )
        except EmailNotValidError as exc:
            yield RowError(line, f"invalid email {raw_email!r}: {exc}", RowProblem.INVALID_EMAIL)
            continue
        email = validated.normalized.lower()
        if email in first_line_of:
            yield RowError(
                line,
                f"duplicate email {email} (first on line {first_line_of[email]})",
                RowProblem.DUPLICATE_EMAIL,
            )
            continue
        first_line_of[email] = line

        first_name = _cell(record, columns.get(CsvField.FIRST_NAME))
        last_name = _cell(record, columns.get(CsvField.LAST_NAME))
        full_name = _cell(record, columns.get(CsvField.FULL_NAME))
        if full_name is None and (first_name or last_name):
            full_name = " ".join(part for part in (first_name, last_name) if part)
        elif full_name is not None and first_name is None and last_name is None:
            first_name, last_name = split_name(full_name)
        yield ContactRow(
            email=email,
            first_name=first_name,
            last_name=last_name,
            full_name=full_name,
            company=_cell(record, columns.get(CsvField.COMPANY)),
            company_domain=_domain(_cell(record, columns.get(CsvField.COMPANY_DOMAIN))),
            phone=_cell(record, columns.get(CsvField.PHONE)),
            owner_email=_owner(_cell(record, columns.get(CsvField.OWNER_EMAIL))),
            line=line,
        )


def parse_contacts_csv(data: bytes, *, allow_test_domains: bool = False) -> ParsedCsv:
    """Parse a contacts CSV export into validated rows and per-line errors.

    Rows without an email, with an invalid email, or repeating an email seen on an earlier line
    are reported in `errors` (the first occurrence wins). Blank rows are skipped silently.
    Missing names are completed from each other: full name from first + last, first + last
    split from the full name. Owner values that are not addresses (some CRMs export the owner's
    name) are dropped. `allow_test_domains` lets `.test` addresses through, for test tenants.

    Raises `CsvImportError` when the file is empty, unreadable or has no email column.
    """
    stream = open_contacts_csv(data, allow_test_domains=allow_test_domains)
    rows: list[ContactRow] = []
    errors: list[RowError] = []
    for entry in stream.entries:
        if isinstance(entry, ContactRow):
            rows.append(entry)
        else:
            errors.append(entry)
    return ParsedCsv(
        rows=tuple(rows),
        errors=tuple(errors),
        encoding=stream.encoding,
        delimiter=stream.delimiter,
        columns=stream.columns,
    )
