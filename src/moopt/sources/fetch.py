"""``moopt fetch``: download the published data a run needs.

The English Prescribing Dataset (EPD) lives on the NHSBSA Open Data Portal, a
CKAN site. This module talks to its action API:

``package_show``
    lists a dataset's monthly resources (``EPD_YYYYMM``, ``EPD_SNOMED_YYYYMM``).
``datastore_search``
    with ``limit=0`` names a resource's columns (they changed between eras).
``datastore_search_sql``
    runs a SELECT on the server. moopt pages through the answer with
    ``LIMIT n OFFSET m``; when the portal says the answer was truncated it
    offers the whole answer as a gzip CSV (``gc_urls``), which is read instead.

Two ways to fetch a month:

* **sql** (default): ask the server for just the ten columns moopt's store
  reads, filtered to the organisations you name (an ICB is ~1% of England),
  and write ``epd_YYYYMM.csv`` in the EPD layout.
* **full**: download the month's whole published file (gigabytes) into a
  local cache, resumably, and link or copy it into the output folder.

Every download retries with exponential backoff, resumes a broken transfer
with an HTTP ``Range`` request, checks size and SHA-256, appears under its
final name only when complete, and is recorded in ``<cache>/manifest.json``
so that a later run reuses it without touching the network.

Nothing here needs more than the standard library (plus pandas for tables).
The network is reached only through a *transport*, a callable
``(url, headers) -> Response``; tests pass one that replays recorded answers.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from moopt import __version__
from moopt.atomic import replacing, write_atomic, write_csv_atomic, write_text_atomic
from moopt.sources.layouts import EPD

DEFAULT_BASE_URL = "https://opendata.nhsbsa.net/api/3/action/"
DEFAULT_PAGE_SIZE = 10_000
CHUNK_BYTES = 1 << 20
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_DELAY = 120.0  # seconds; also caps a server's Retry-After

MONTH_PATTERN = re.compile(r"^(\d{4})-?(0[1-9]|1[0-2])$")
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TABLE_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ORG_CODE_PATTERN = re.compile(r"^[A-Z0-9]{1,12}$")

Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    """The default progress callback: say nothing."""


class FetchError(ValueError):
    """A download or portal query failed; the message says which URL, month and what to do."""


# -- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """One EPD dataset on the portal and the column names moopt writes for it."""

    key: str
    ckan_id: str
    title: str
    table_prefix: str
    bnf_column: str  # the output header's name for the BNF presentation code
    adq_column: str  # ... and for ADQ usage
    renamed_from: str | None  # first month using the new column names (SNOMED dataset only)


DATASETS: dict[str, DatasetSpec] = {
    "epd": DatasetSpec("epd", "english-prescribing-data-epd", "English Prescribing Dataset (EPD)",
                       "EPD_", "BNF_CODE", "ADQUSAGE", None),
    "epd-snomed": DatasetSpec("epd-snomed", "english-prescribing-dataset-epd-with-snomed-code",
                              "English Prescribing Dataset with SNOMED code",
                              "EPD_SNOMED_", "BNF_PRESENTATION_CODE", "ADQ_USAGE", "2025-03"),
}

# The store's EPD layout (moopt.sources.layouts.EPD) decides which columns are fetched and
# which source names each may have; fetch writes them in this order.
EPD_ROLES: tuple[str, ...] = ("year_month", "practice_name", "practice_code", "bnf_code",
                              "quantity", "items", "total_quantity", "adq_usage", "nic",
                              "actual_cost")
KEY_ROLES: tuple[str, ...] = ("year_month", "practice_code", "bnf_code", "quantity")
MEASURE_ROLES: tuple[str, ...] = ("items", "total_quantity", "adq_usage", "nic", "actual_cost")
NUMERIC_ROLES: tuple[str, ...] = ("quantity", *MEASURE_ROLES)

# Server-side filters: organisation level -> EPD column(s), newest era first.
FILTER_COLUMNS: dict[str, tuple[str, ...]] = {
    "practice": ("PRACTICE_CODE",),
    "sub_icb": ("PCO_CODE",),
    "icb": ("ICB_CODE", "STP_CODE", "AREA_TEAM_CODE"),
    "region": ("REGIONAL_OFFICE_CODE",),
}


def output_columns(dataset: str) -> list[str]:
    """The header of the CSV that sql mode writes for ``dataset`` (an EPD layout header)."""
    spec = _dataset(dataset)
    names = {role: EPD.columns[role][0] for role in EPD_ROLES}
    names["bnf_code"] = spec.bnf_column
    names["adq_usage"] = spec.adq_column
    return [names[role] for role in EPD_ROLES]


def _dataset(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise FetchError(f"Unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}.")
    return DATASETS[dataset]


# -- months --------------------------------------------------------------------------------------


def _month(text: str) -> str:
    """``"2024-01"`` or ``"202401"`` -> ``"2024-01"``; anything else is an error."""
    match = MONTH_PATTERN.match(str(text).strip())
    if not match:
        raise FetchError(f"{text!r} is not a month: write it as YYYY-MM, e.g. 2024-01.")
    return f"{match.group(1)}-{match.group(2)}"


def _month_number(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def _month_text(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}"


def month_range(end: str, count: int) -> list[str]:
    """The ``count`` months ending with ``end``, oldest first."""
    if not isinstance(count, int) or count < 1:
        raise FetchError(f"The number of months must be 1 or more, not {count!r}.")
    last = _month_number(_month(end))
    return [_month_text(n) for n in range(last - count + 1, last + 1)]


def parse_months(text: str) -> list[str]:
    """Read ``--months``: ranges ``2024-01:2024-03`` and/or a comma list, oldest first.

    Examples
    --------
    >>> parse_months("2024-11:2025-01,2024-06")
    ['2024-06', '2024-11', '2024-12', '2025-01']
    """
    months: set[str] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            start_text, end_text = part.split(":", 1)
            start, end = _month(start_text), _month(end_text)
            if _month_number(start) > _month_number(end):
                raise FetchError(f"The month range {part!r} runs backwards: write the earlier "
                                 "month first, e.g. 2024-01:2024-03.")
            months.update(month_range(end, _month_number(end) - _month_number(start) + 1))
        else:
            months.add(_month(part))
    if not months:
        raise FetchError("No months given: use e.g. --months 2024-01:2024-03 or 2024-01,2024-02.")
    return sorted(months)


def _describe_months(months: Iterable[str]) -> str:
    """``2020-11 to 2021-02, 2021-05`` for a sorted set of months (runs collapsed)."""
    numbers = sorted({_month_number(m) for m in months})
    if not numbers:
        return "none"
    runs: list[list[int]] = [[numbers[0], numbers[0]]]
    for n in numbers[1:]:
        if n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(_month_text(a) if a == b else f"{_month_text(a)} to {_month_text(b)}"
                     for a, b in runs)
    return f"{text} ({len(numbers)} months)"


# -- SQL safety ------------------------------------------------------------------------------------


def sql_literal(value: str) -> str:
    """Quote ``value`` as an SQL string literal: single quotes, inner quotes doubled.

    Backslashes and control characters are refused rather than escaped, because
    SQL dialects disagree about them (BigQuery treats a backslash as an escape).

    Examples
    --------
    >>> sql_literal("O'Brien")
    "'O''Brien'"
    """
    if not isinstance(value, str):
        raise FetchError(f"An SQL text value must be a string, not {type(value).__name__}.")
    if "\\" in value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise FetchError(f"The value {value!r} contains a backslash or control character; "
                         "it cannot be used in a portal query.")
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """Return ``name`` upper-cased if it is a plain column name (letters, digits, _)."""
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.match(name):
        raise FetchError(f"{name!r} is not a column name: use letters, digits and _ only, "
                         "starting with a letter (e.g. ICB_CODE).")
    return name.upper()


def sql_table(name: str) -> str:
    """A resource's table name wrapped in backticks, as the portal expects."""
    if not isinstance(name, str) or not TABLE_PATTERN.match(name):
        raise FetchError(f"{name!r} is not a portal table name (letters, digits and _ only, "
                         "e.g. EPD_202401).")
    return f"`{name}`"


def check_org_code(code: str) -> str:
    """Return ``code`` stripped and upper-cased if it is 1-12 letters or digits, else raise."""
    text = str(code).strip().upper() if isinstance(code, str) else ""
    if not ORG_CODE_PATTERN.match(text):
        raise FetchError(f"The organisation code {code!r} is not usable: codes are 1 to 12 "
                         "letters or digits (e.g. QNC, 04Y, M83001).")
    return text


# -- HTTP ----------------------------------------------------------------------------------------


@dataclass
class Response:
    """What a transport returns: status, headers and the body (bytes or an iterator of chunks)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def chunks(self) -> Iterator[bytes]:
        if isinstance(self.body, (bytes, bytearray)):
            if self.body:
                yield bytes(self.body)
        else:
            yield from self.body


Transport = Callable[[str, Mapping[str, str]], Response]


class UrllibTransport:
    """The real transport: ``urllib.request`` with a timeout, streaming the body in 1 MiB chunks."""

    def __init__(self, timeout: float = 60):
        self.timeout = timeout

    def __call__(self, url: str, headers: Mapping[str, str]) -> Response:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(f"Only http and https addresses can be fetched, not {url}.")
        request = urllib.request.Request(
            url, headers={"User-Agent": f"moopt/{__version__} (moopt fetch)", **dict(headers)})
        try:
            # The scheme was checked above, so urlopen cannot read local files.
            answer = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as error:
            try:
                body = error.read()
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                error.close()
            return Response(error.code, dict(error.headers or {}), body)
        return Response(answer.status, dict(answer.headers), _stream(answer))


def _stream(answer) -> Iterator[bytes]:
    try:
        while chunk := answer.read(CHUNK_BYTES):
            yield chunk
    finally:
        answer.close()


def _unreachable(exc: BaseException) -> bool:
    """True for a failed name lookup (no network or no DNS), which no retry can mend."""
    import socket

    reason = getattr(exc, "reason", exc)
    return isinstance(reason, socket.gaierror) or isinstance(exc, socket.gaierror)


class _Retryable(Exception):
    """A failure worth trying again (network trouble, HTTP 429/5xx, a cut-off body)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


_NETWORK_ERRORS = (OSError, http.client.HTTPException)


def _network(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass chunks through, turning a connection that breaks mid-body into :class:`_Retryable`."""
    try:
        yield from chunks
    except _NETWORK_ERRORS as exc:
        reason = f"the connection broke mid-transfer ({type(exc).__name__}: {exc})"
        raise _Retryable(reason) from exc


def _show_url(url: str, limit: int = 300) -> str:
    text = urllib.parse.unquote_plus(url)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _ckan_error(payload: Any) -> str:
    """The human part of a CKAN ``error`` object."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "no error message"
    parts = [str(error[key]) for key in ("__type", "message") if error.get(key)]
    info = error.get("info")
    if isinstance(info, dict) and info.get("orig"):
        orig = info["orig"]
        parts.append("; ".join(map(str, orig)) if isinstance(orig, list) else str(orig))
    extra = {k: v for k, v in error.items() if k not in ("__type", "message", "info")}
    if extra:
        parts.append(json.dumps(extra, default=str)[:300])
    return ": ".join(parts) if parts else json.dumps(error, default=str)[:300]


# -- the portal client -------------------------------------------------------------------------


@dataclass(frozen=True)
class CkanResource:
    """One resource of a CKAN dataset (for the EPD, one month)."""

    name: str
    table: str  # bq_table_name, else name: what datastore_search_sql calls the table
    id: str
    url: str
    format: str
    month: str | None = None  # YYYY-MM when the name carries one


@dataclass
class FetchedFile:
    """A file ``moopt fetch`` produced; ``cached`` means no download was needed this time."""

    path: Path
    rows: int | None
    bytes: int
    sha256: str
    source_url: str
    cached: bool


class CkanClient:
    """A small client for a CKAN action API (by default the NHSBSA Open Data Portal).

    Parameters
    ----------
    base_url : str
        The action API root, ending in ``/api/3/action/``.
    transport : callable, optional
        ``(url, headers) -> Response``. The default uses ``urllib``; tests pass a
        function that replays recorded answers.
    retries : int
        Further attempts after a failure worth retrying (connection errors,
        timeouts, HTTP 408/425/429/5xx, a body cut short). Attempts that make
        progress on a download do not use up this allowance.
    backoff : float
        First wait in seconds; it doubles on each retry (capped at 120 s). A
        larger ``Retry-After`` from the server wins.
    timeout : float
        Seconds the default transport waits for the server.
    sleep : callable
        Called with the number of seconds to wait; tests pass a recorder.
    progress : callable, optional
        Receives one-line progress messages (pages, rows, MB, retries).
    """

    def __init__(self, base_url: str = DEFAULT_BASE_URL, transport: Transport | None = None,
                 retries: int = 4, backoff: float = 1.0, timeout: float = 60,
                 sleep: Callable[[float], None] = time.sleep, progress: Say | None = None):
        if not isinstance(retries, int) or retries < 0:
            raise FetchError(f"retries must be a whole number of 0 or more, not {retries!r}.")
        if not base_url.startswith(("http://", "https://")):
            raise FetchError(f"The portal address must start with https://, not {base_url!r}.")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.transport: Transport = transport or UrllibTransport(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.sleep = sleep
        self.say: Say = progress or _quiet
        self._packages: dict[str, list[CkanResource]] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _retrying(self, url: str, attempt: Callable[[], Any],
                  made_progress: Callable[[], bool] = lambda: False) -> Any:
        """Run ``attempt`` until it succeeds, retrying :class:`_Retryable` failures."""
        failures = 0
        while True:
            try:
                return attempt()
            except _Retryable as exc:
                reason, retry_after = exc.reason, exc.retry_after
            if made_progress():
                failures = 0  # a transfer that moved forward is not a strike
            if failures >= self.retries:
                raise FetchError(
                    f"Gave up on {_show_url(url)} after {failures + 1} attempt(s): {reason}. "
                    "The server may be busy or down: try again later (a download resumes where it "
                    "stopped)."
                )
            delay = min(MAX_RETRY_DELAY, self.backoff * 2 ** failures)
            if retry_after is not None:
                delay = min(MAX_RETRY_DELAY, max(delay, retry_after))
            failures += 1
            self.say(f"retry {failures}/{self.retries} in {delay:.0f}s ({reason}): "
                     f"{_show_url(url, 120)}")
            self.sleep(delay)

    def _open(self, url: str, headers: Mapping[str, str] | None = None,
              accept: tuple[int, ...] = (200,)) -> Response:
        """One request; statuses in ``accept`` are returned, retryable ones raise _Retryable."""
        try:
            response = self.transport(url, dict(headers or {}))
        except _NETWORK_ERRORS as exc:
            if _unreachable(exc):  # retrying cannot help when the name does not resolve
                host = urllib.parse.urlsplit(url).hostname
                raise FetchError(
                    f"Cannot reach {host} ({exc}): this machine cannot look the portal up. Check the network "
                    "connection or proxy (HTTPS_PROXY), or download the files another way and list them "
                    "under data.epd in the run file.") from exc
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        status = int(response.status)
        if status in accept:
            return response
        if status in RETRY_STATUSES:
            retry_after = response.header("Retry-After")
            seconds = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
            raise _Retryable(f"HTTP {status}", seconds)
        try:
            body = b"".join(response.chunks())
        except _NETWORK_ERRORS:
            body = b""
        detail = ""
        try:
            payload = json.loads(body.decode("utf-8"))
            if isinstance(payload, dict) and payload.get("success") is False:
                detail = f" The portal said: {_ckan_error(payload)}."
        except (UnicodeDecodeError, ValueError):
            pass
        raise FetchError(f"HTTP {status} from {_show_url(url)}.{detail} Check the dataset, "
                         "resource or query named in the address.")

    def get_json(self, url: str) -> dict:
        """GET a CKAN action URL and return its payload, checking ``success``."""

        def attempt() -> dict:
            response = self._open(url)
            body = b"".join(_network(response.chunks()))
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                # A proxy's error page or a cut-off body: worth another try.
                raise _Retryable(f"the answer was not JSON ({body[:80]!r})") from exc
            return payload

        payload = self._retrying(url, attempt)
        if not isinstance(payload, dict) or "success" not in payload:
            raise FetchError(f"{_show_url(url)} did not answer like a CKAN API "
                             "(no 'success' field). Is the portal address right?")
        if not _truthy(payload["success"]):
            raise FetchError(f"The portal refused {_show_url(url)}: {_ckan_error(payload)}.")
        return payload

    def action_url(self, action: str, **params: Any) -> str:
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        return f"{self.base_url}{action}" + (f"?{query}" if query else "")

    # -- CKAN actions -----------------------------------------------------------------------

    def package_show(self, dataset_id: str) -> list[CkanResource]:
        """The resources of dataset ``dataset_id`` (remembered for this client's lifetime)."""
        if dataset_id in self._packages:
            return self._packages[dataset_id]
        if not re.match(r"^[a-z0-9_-]{2,100}$", dataset_id or ""):
            raise FetchError(f"{dataset_id!r} is not a CKAN dataset id "
                             "(lower-case letters, digits, - and _).")
        payload = self.get_json(self.action_url("package_show", id=dataset_id))
        result = payload.get("result") or {}
        resources = []
        for item in result.get("resources") or []:
            if not isinstance(item, dict):
                continue
            name = str(item.get("name") or "")
            table = str(item.get("bq_table_name") or name)
            found = re.search(r"(\d{6})$", table)
            month = None
            if found and MONTH_PATTERN.match(found.group(1)):
                month = _month(found.group(1))
            resources.append(CkanResource(name=name, table=table, id=str(item.get("id") or ""),
                                          url=str(item.get("url") or ""),
                                          format=str(item.get("format") or ""), month=month))
        self._packages[dataset_id] = resources
        return resources

    def datastore_fields(self, resource_id: str) -> list[str]:
        """The column names of a resource (``datastore_search`` with ``limit=0``), upper case."""
        sql_table(resource_id)  # validates the name
        payload = self.get_json(self.action_url("datastore_search", resource_id=resource_id,
                                                limit=0))
        fields = (payload.get("result") or {}).get("fields") or []
        return [str(f.get("id")).upper() for f in fields
                if isinstance(f, dict) and f.get("id") and not str(f.get("id")).startswith("_")]

    def datastore_search_sql(self, resource_id: str, sql: str, *,
                             page_size: int = DEFAULT_PAGE_SIZE,
                             numeric_columns: Iterable[str] = (),
                             cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
        """Run a SELECT on the portal, page by page, and return every row.

        Parameters
        ----------
        resource_id : str
            The resource (table) the query reads, e.g. ``EPD_202401``.
        sql : str
            A SELECT **without** LIMIT/OFFSET; table names in backticks. Give it an
            ORDER BY that makes the row order unique, or pages may overlap.
        page_size : int
            Rows per request; ``LIMIT page_size OFFSET k*page_size`` is appended
            and pages are requested until one comes back short.
        numeric_columns : iterable of str
            Columns to convert to numbers (the portal may send ``"28.0"``);
            a value that is not a number is an error. Other columns stay text.
        cache_dir : path, optional
            Where a truncated answer's gzip CSV is downloaded to (then deleted);
            default the system temporary folder.

        Returns
        -------
        pandas.DataFrame
            Columns named as the query names them, upper case.

        Notes
        -----
        When the portal answers ``records_truncated: "true"`` it has not sent
        every row of that page as JSON; it puts the whole answer in a gzip CSV
        at ``gc_urls[0].url``. That file is read in place of the JSON records.
        If it holds more rows than a page (the server did not apply the LIMIT)
        it is taken as the complete answer.
        """
        sql_table(resource_id)  # validates the name
        if not isinstance(page_size, int) or page_size < 1:
            raise FetchError(f"The page size must be a whole number of 1 or more, "
                             f"not {page_size!r}.")
        query = str(sql).strip()
        if not re.match(r"(?is)^select\s", query):
            raise FetchError("Only SELECT queries can be sent to the portal.")
        if ";" in query:
            raise FetchError("A portal query must be one statement without ';'.")
        if re.search(r"(?is)\blimit\s+\d+(\s+offset\s+\d+)?\s*$", query):
            raise FetchError("Give the SELECT without LIMIT/OFFSET: moopt adds them to page "
                             "through the answer.")
        numeric = [c.upper() for c in numeric_columns]
        frames: list[pd.DataFrame] = []
        columns: list[str] = []
        offset, page, total, previous = 0, 0, 0, None
        while True:
            page += 1
            url = self.action_url("datastore_search_sql", resource_id=resource_id,
                                  sql=f"{query} LIMIT {page_size} OFFSET {offset}")
            result = self.get_json(url).get("result") or {}
            inner = result.get("result") if isinstance(result.get("result"), dict) else {}
            truncated = _truthy(result.get("records_truncated")) or _truthy(
                inner.get("records_truncated"))
            if truncated:
                frame = self._read_truncated(result, url, cache_dir)
            else:
                records = inner.get("records", result.get("records"))
                if records is None:
                    raise FetchError(f"The portal's answer to {_show_url(url)} has no records.")
                frame = pd.DataFrame.from_records(records)
                columns = columns or [str(f.get("id")) for f in inner.get("fields") or []
                                      if isinstance(f, dict) and f.get("id")]
            frame.columns = [str(c).upper() for c in frame.columns]
            if previous is not None and len(frame) and frame.equals(previous):
                raise FetchError(f"The portal sent the same page twice for {resource_id} "
                                 f"(offset {offset}); it may be ignoring OFFSET.")
            frames.append(frame)
            total += len(frame)
            self.say(f"{resource_id}: page {page}, {len(frame):,} rows ({total:,} so far)"
                     + (" from the truncated-answer file" if truncated else ""))
            if truncated and len(frame) > page_size:
                if offset:  # a whole answer after earlier pages would repeat their rows
                    raise FetchError(f"The portal ignored LIMIT for {resource_id} at offset "
                                     f"{offset}; fetch again with a larger --page-size.")
                break  # the server gave the whole answer in one file
            if len(frame) < page_size:
                break
            previous = frame
            offset += page_size
        frames = [f for f in frames if len(f.columns)]
        if frames:
            combined = pd.concat(frames, ignore_index=True)
        else:
            combined = pd.DataFrame(columns=[c.upper() for c in columns])
        return _typed(combined, numeric, resource_id)

    def _read_truncated(self, result: dict, url: str,
                        cache_dir: str | os.PathLike[str] | None) -> pd.DataFrame:
        gc_urls = result.get("gc_urls") or []
        first = gc_urls[0] if gc_urls else None
        file_url = first.get("url") if isinstance(first, dict) else first
        if not file_url:
            raise FetchError(f"The portal truncated the answer to {_show_url(url)} but gave no "
                             "download link (gc_urls). Try a smaller --page-size.")
        folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".truncated-{uuid.uuid4().hex}.csv.gz"
        self.say("the portal truncated the answer; downloading the full result file")
        try:
            self.fetch_to_file(str(file_url), temporary)
            with open(temporary, "rb") as handle:
                compressed = handle.read(2) == b"\x1f\x8b"
            return pd.read_csv(temporary, dtype=str, keep_default_na=False,
                               compression="gzip" if compressed else None)
        finally:
            temporary.unlink(missing_ok=True)

    # -- downloads -------------------------------------------------------------------------

    def fetch_to_file(self, url: str, dest: str | os.PathLike[str],
                      expected_size: int | None = None,
                      expected_sha256: str | None = None) -> tuple[int, str, Response]:
        """Download ``url`` to ``dest`` resumably and verify it; returns (size, sha256, response).

        The bytes go to ``dest.part``. A broken transfer is resumed with
        ``Range: bytes=<have>-``; a server answering 200 instead of 206 sends
        the whole file again, so the part file is restarted. Only a verified
        file is renamed to ``dest``; a file failing its size or checksum is
        deleted and the error names both hashes.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        # Validators of the response the part file came from: a resume sends them as If-Range,
        # so a file replaced on the server meanwhile is sent whole instead of spliced.
        part_meta = dest.with_name(dest.name + ".part.json")
        label = dest.name
        state: dict[str, Any] = {"have": 0, "best": 0, "response": None}

        def progressed() -> bool:
            # Only a part file longer than ever before counts as progress, so a server that
            # keeps breaking and restarting from zero still runs out of retries.
            moved = state["have"] > state["best"]
            state["best"] = max(state["best"], state["have"])
            return moved

        def resume_from() -> tuple[int, dict[str, str]]:
            have = part.stat().st_size if part.exists() else 0
            meta: dict = {}
            if have and part_meta.exists():
                try:
                    meta = json.loads(part_meta.read_text(encoding="utf-8"))
                except ValueError:
                    meta = {}
            if have and meta.get("url") != url:  # a part file of unknown origin: start again
                part.unlink(missing_ok=True)
                have = 0
            headers: dict[str, str] = {}
            if have:
                headers["Range"] = f"bytes={have}-"
                validator = meta.get("etag") or meta.get("last_modified")
                if validator:
                    headers["If-Range"] = validator
            return have, headers

        def attempt() -> None:
            have, headers = resume_from()
            state["best"] = max(state["best"], have)
            state["have"] = have
            response = self._open(url, headers, accept=(200, 206, 416))
            total: int | None = None
            if response.status == 416:  # our part is longer than the file: start again
                part.unlink(missing_ok=True)
                raise _Retryable("the server refused to resume (HTTP 416)")
            if response.status == 206:
                content_range = response.header("Content-Range") or ""
                match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", content_range)
                if not match or int(match.group(1)) != have:
                    part.unlink(missing_ok=True)
                    raise _Retryable("the server resumed from the wrong place; restarting")
                total = int(match.group(3)) if match.group(3) != "*" else None
                mode = "ab"
                self.say(f"{label}: resuming at {have / 1e6:,.1f} MB")
            else:
                if have:
                    self.say(f"{label}: the server sent the whole file again; restarting")
                have = 0
                length = response.header("Content-Length")
                total = int(length) if length and length.strip().isdigit() else None
                mode = "wb"
                write_text_atomic(part_meta, json.dumps({
                    "url": url, "etag": response.header("ETag"),
                    "last_modified": response.header("Last-Modified")}))
            state["have"] = have
            report_every = 64 * CHUNK_BYTES
            next_report = have + report_every
            with open(part, mode) as handle:
                for chunk in _network(response.chunks()):
                    handle.write(chunk)
                    state["have"] += len(chunk)
                    if state["have"] >= next_report:
                        of = f" of {total / 1e6:,.1f}" if total else ""
                        self.say(f"{label}: {state['have'] / 1e6:,.1f}{of} MB")
                        next_report += report_every
                handle.flush()
                os.fsync(handle.fileno())
            if total is not None and state["have"] != total:
                if state["have"] > total:
                    part.unlink(missing_ok=True)
                    raise _Retryable(f"the server sent {state['have']:,} bytes, more than the "
                                     f"{total:,} it announced; restarting")
                raise _Retryable(f"the connection closed after {state['have']:,} of "
                                 f"{total:,} bytes")
            state["response"] = response

        self._retrying(url, attempt, progressed)
        size = part.stat().st_size
        if expected_size is not None and size != int(expected_size):
            part.unlink(missing_ok=True)
            part_meta.unlink(missing_ok=True)
            raise FetchError(f"{label}: downloaded {size:,} bytes from {_show_url(url)} but "
                             f"{int(expected_size):,} were expected; the file was deleted. "
                             "Try again; if it persists the published file has changed.")
        actual = _sha256_file(part)
        if expected_sha256 is not None and actual != expected_sha256.strip().lower():
            part.unlink(missing_ok=True)
            part_meta.unlink(missing_ok=True)
            raise FetchError(f"{label}: checksum mismatch for {_show_url(url)}: expected sha256 "
                             f"{expected_sha256.strip().lower()}, got {actual}. "
                             "The file was deleted. "
                             "Check the expected hash, or whether the publisher replaced the file.")
        os.replace(part, dest)
        part_meta.unlink(missing_ok=True)
        self.say(f"{label}: downloaded {size / 1e6:,.1f} MB")
        return size, actual, state["response"]


def _typed(frame: pd.DataFrame, numeric: list[str], what: str) -> pd.DataFrame:
    """Text columns as str; ``numeric`` columns as numbers (the portal may send "28.0")."""
    out = frame.copy()
    for column in out.columns:
        if column in numeric:
            raw = out[column]
            values = pd.to_numeric(raw, errors="coerce")
            bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
            if bad.any():
                examples = ", ".join(repr(v) for v in raw[bad].astype(str).unique()[:3])
                raise FetchError(f"{what}: column {column} holds values that are not numbers "
                                 f"({examples}).")
            out[column] = values
        else:
            out[column] = out[column].astype("str")
    return out


# -- the cache manifest --------------------------------------------------------------------------


class _Manifest:
    """``<cache>/manifest.json``: what was downloaded (``files``) and written (``outputs``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "manifest.json"

    def _load(self) -> dict:
        if not self.path.exists():
            return {"format": "moopt-fetch-cache", "version": 1, "files": {}, "outputs": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise FetchError(f"The cache manifest {self.path} is not valid JSON ({exc}); "
                             "delete it and the cache will be rebuilt.") from exc
        data.setdefault("files", {})
        data.setdefault("outputs", {})
        return data

    def get(self, section: str, key: str) -> dict | None:
        return self._load()[section].get(key)

    def put(self, section: str, key: str, entry: dict | None) -> None:
        # Re-read just before writing so entries from another run are kept.
        data = self._load()
        if entry is None:
            data[section].pop(key, None)
        else:
            data[section][key] = entry
        write_text_atomic(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _safe_name(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name[:120] or "download"


def _cache_name(url: str) -> str:
    """A cache file name: a short hash of the URL (so names never collide) plus its own name."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{_safe_name(url)}"


def download(url: str, dest: str | os.PathLike[str], expected_sha256: str | None = None,
             expected_size: int | None = None, *, client: CkanClient | None = None,
             progress: Say | None = None) -> FetchedFile:
    """Download ``url`` to ``dest`` (a file in the cache folder) unless already there.

    Parameters
    ----------
    url : str
        http(s) address.
    dest : path
        Where the file goes; its folder is the cache and holds ``manifest.json``.
    expected_sha256, expected_size : optional
        Checked after the download; a mismatch deletes the file and raises.
    client : CkanClient, optional
        Supplies the transport, retries and progress messages.

    Returns
    -------
    FetchedFile
        ``cached`` is True when the file was already present with the size and
        SHA-256 the manifest recorded (and any expected values): no request is made.
    """
    if urllib.parse.urlsplit(str(url)).scheme not in ("http", "https"):
        raise FetchError(f"Only http and https addresses can be fetched, not {url!r}.")
    if expected_sha256 is not None and not re.match(r"^[0-9a-fA-F]{64}$", expected_sha256.strip()):
        raise FetchError(f"{expected_sha256!r} is not a SHA-256 hash (64 hexadecimal characters).")
    client = client or CkanClient(progress=progress)
    dest = Path(dest)
    manifest = _Manifest(dest.parent)
    entry = manifest.get("files", dest.name)
    if dest.exists() and entry and entry.get("url") == url:
        size = dest.stat().st_size
        wanted_sha = (expected_sha256 or entry.get("sha256") or "").strip().lower()
        if (size == entry.get("size") and (expected_size is None or size == int(expected_size))
                and wanted_sha == entry.get("sha256") and _sha256_file(dest) == wanted_sha):
            client.say(f"{dest.name}: cached ({size / 1e6:,.1f} MB)")
            return FetchedFile(dest, None, size, wanted_sha, url, cached=True)
    if dest.exists():  # not a verified copy of this URL: it must not look complete
        dest.unlink()
        manifest.put("files", dest.name, None)
    size, sha256, response = client.fetch_to_file(url, dest, expected_size, expected_sha256)
    manifest.put("files", dest.name, {
        "url": url, "size": size, "sha256": sha256, "fetched_at": _now(),
        "etag": response.header("ETag") if response else None,
        "last_modified": response.header("Last-Modified") if response else None,
    })
    return FetchedFile(dest, None, size, sha256, url, cached=False)


def _place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically: a hard link when possible, else a copy."""
    with replacing(target) as temporary:
        try:
            os.link(source, temporary)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, temporary)


def _extract_csv(archive: Path, target: Path, url: str) -> str:
    """Extract the one CSV inside ``archive`` to ``target`` atomically; return its sha256."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist()
                       if not m.is_dir() and m.filename.lower().endswith(".csv")]
            if len(members) != 1:
                names = ", ".join(m.filename for m in zipped.infolist()) or "nothing"
                raise FetchError(f"{archive.name} from {_show_url(url)} should hold one CSV file "
                                 f"but holds {names}. Unzip it by hand and name the CSV in "
                                 "the run file.")
            digest = hashlib.sha256()

            def copy_hashing(out) -> None:
                with zipped.open(members[0]) as source:
                    while chunk := source.read(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)

            write_atomic(target, copy_hashing, binary=True)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{archive} from {_show_url(url)} is not a valid zip file ({exc}); "
                         "delete it from the cache and fetch again.") from exc
    return digest.hexdigest()


def _output_is_current(manifest: _Manifest, path: Path, fingerprint: str) -> dict | None:
    """The manifest entry for ``path`` if the file is unchanged since fetch wrote it."""
    entry = manifest.get("outputs", str(path.resolve()))
    if not entry or entry.get("fingerprint") != fingerprint or not path.exists():
        return None
    stat = path.stat()
    # Size and modification time, as the store does: hashing gigabytes on every run is too slow.
    if stat.st_size != entry.get("size") or stat.st_mtime_ns != entry.get("mtime_ns"):
        return None
    return entry


def _record_output(manifest: _Manifest, path: Path, fingerprint: str, sha256: str,
                   rows: int | None, source_url: str) -> FetchedFile:
    stat = path.stat()
    manifest.put("outputs", str(path.resolve()), {
        "fingerprint": fingerprint, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256, "rows": rows, "source_url": source_url, "written_at": _now()})
    return FetchedFile(path, rows, stat.st_size, sha256, source_url, cached=False)


def fetch_url(url: str, out_dir: str | os.PathLike[str], sha256: str | None = None, *,
              client: CkanClient | None = None, cache_dir: str | os.PathLike[str] | None = None,
              unzip: bool = True, progress: Say | None = None) -> list[FetchedFile]:
    """Download a file from outside the portal (list sizes, ODS files) into ``out_dir``.

    The file is downloaded into the cache (resumably, checked against ``sha256``
    when given) and linked or copied into ``out_dir``. A zip holding exactly one
    CSV is unpacked when ``unzip`` is True (ODS ``epraccur.zip``, for example);
    a zip with several files is kept as it is.

    Returns
    -------
    list of FetchedFile
        The file placed in ``out_dir`` (the CSV when a zip was unpacked).
    """
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out_dir.parent / "cache"
    client = client or CkanClient(progress=progress)
    got = download(url, cache / _cache_name(url), sha256, client=client)
    manifest = _Manifest(cache)
    name = _safe_name(url)
    if unzip and zipfile.is_zipfile(got.path):
        with zipfile.ZipFile(got.path) as zipped:
            csvs = [m.filename for m in zipped.infolist()
                    if not m.is_dir() and m.filename.lower().endswith(".csv")]
        if len(csvs) == 1:
            target = out_dir / _safe_name("/" + csvs[0])
            fingerprint = f"unzip:{got.sha256}"
            entry = _output_is_current(manifest, target, fingerprint)
            if entry:
                return [FetchedFile(target, entry.get("rows"), entry["size"], entry["sha256"],
                                    url, got.cached)]
            out_dir.mkdir(parents=True, exist_ok=True)
            digest = _extract_csv(got.path, target, url)
            placed = _record_output(manifest, target, fingerprint, digest, None, url)
            placed.cached = got.cached
            client.say(f"{target.name}: unpacked from {name}")
            return [placed]
    target = out_dir / name
    fingerprint = f"copy:{got.sha256}"
    entry = _output_is_current(manifest, target, fingerprint)
    if not entry:
        _place(got.path, target)
        _record_output(manifest, target, fingerprint, got.sha256, None, url)
    return [FetchedFile(target, None, got.bytes, got.sha256, url, got.cached)]


# -- EPD ----------------------------------------------------------------------------------------


def resources_by_month(resources: Iterable[CkanResource], dataset: str) -> dict[str, CkanResource]:
    """The monthly resources of an EPD dataset keyed by ``YYYY-MM`` (others are ignored)."""
    spec = _dataset(dataset)
    pattern = re.compile(rf"^{re.escape(spec.table_prefix)}(\d{{6}})$")
    found = {}
    for resource in resources:
        for label in (resource.table, resource.name):
            match = pattern.match(label.upper())
            if match and MONTH_PATTERN.match(match.group(1)):
                found[_month(match.group(1))] = resource
                break
    return found


def pick_resource(resources: Iterable[CkanResource], month: str, dataset: str) -> CkanResource:
    """The resource for ``month``; a clear error listing the months available when it is missing."""
    spec = _dataset(dataset)
    month = _month(month)
    by_month = resources_by_month(resources, dataset)
    if month in by_month:
        return by_month[month]
    hint = ""
    if by_month:
        first, last = min(by_month), max(by_month)
        if dataset == "epd-snomed" and month < first:
            hint = " For earlier months use --dataset epd (the original EPD, 2014 to 2025)."
        elif dataset == "epd" and month > last:
            hint = (" The original EPD ends there; use --dataset epd-snomed (EPD with SNOMED code) "
                    "for later months.")
        elif month > last:
            hint = " Later months are not published yet."
    raise FetchError(
        f"The {spec.title} ({spec.ckan_id}) has no resource for {month} "
        f"(looked for {spec.table_prefix}{month.replace('-', '')}). "
        f"Months available: {_describe_months(by_month)}.{hint}")


def latest_month(client: CkanClient, dataset: str) -> str:
    """The newest month the portal publishes for ``dataset``."""
    spec = _dataset(dataset)
    by_month = resources_by_month(client.package_show(spec.ckan_id), dataset)
    if not by_month:
        raise FetchError(f"The portal lists no monthly {spec.table_prefix}YYYYMM resources in "
                         f"{spec.ckan_id}.")
    return max(by_month)


def _assumed_fields(dataset: str, month: str) -> list[str]:
    """Column names by era, used only when the portal will not list a resource's columns."""
    spec = _dataset(dataset)
    new_names = spec.renamed_from is not None and month >= spec.renamed_from
    geography = ("ICB_CODE" if month >= "2022-07" else
                 "STP_CODE" if month >= "2019-04" else "AREA_TEAM_CODE")
    return ["YEAR_MONTH", "REGIONAL_OFFICE_CODE", geography, "PCO_CODE", "PRACTICE_NAME",
            "PRACTICE_CODE", "BNF_PRESENTATION_CODE" if new_names else "BNF_CODE", "QUANTITY",
            "ITEMS", "TOTAL_QUANTITY", "ADQ_USAGE" if new_names else "ADQUSAGE", "NIC",
            "ACTUAL_COST"]


def _normalise_where(where: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    """Validate a filter: keys are levels (practice, sub_icb, icb, region) or column names."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise FetchError("where must map a level or column name to a list of codes, "
                         "e.g. {'icb': ['QNC']}.")
    clean: dict[str, list[str]] = {}
    for key, codes in where.items():
        name = key if key in FILTER_COLUMNS else sql_identifier(key)
        if isinstance(codes, str) or not isinstance(codes, Iterable):
            raise FetchError(f"The codes for {key} must be a list, e.g. ['QNC'], not {codes!r}.")
        values = sorted({check_org_code(code) for code in codes})
        if not values:
            raise FetchError(f"The filter for {key} lists no codes.")
        if name == "sub_icb":  # EPD's PCO_CODE is the 3-character code followed by 00
            values = sorted({v + "00" if len(v) == 3 else v for v in values})
        clean[name] = values
    return clean


def _resolve(candidates: Iterable[str], fields: list[str], what: str, table: str) -> str:
    for name in candidates:
        if name in fields:
            return name
    raise FetchError(f"{table} has no {what} column (looked for {', '.join(candidates)}). "
                     f"Its columns are: {', '.join(fields)}.")


def build_epd_sql(table: str, fields: list[str], dataset: str,
                  where: Mapping[str, list[str]] | None = None, aggregate: bool = False) -> str:
    """The SELECT (without LIMIT) for one month of EPD in the columns moopt's store reads.

    ``fields`` are the resource's columns (they name things differently by era);
    ``where`` is a normalised filter (see :func:`fetch_epd`). With ``aggregate``
    rows are grouped by month, practice, BNF code and quantity per item (the
    store's key) and the measures summed on the server.
    """
    fields = [f.upper() for f in fields]
    outputs = dict(zip(EPD_ROLES, output_columns(dataset), strict=True))
    source = {}
    for role in EPD_ROLES:
        candidates = (outputs[role], *EPD.columns[role])
        source[role] = _resolve(dict.fromkeys(candidates), fields, role.upper(), table)
    selected = []
    for role in EPD_ROLES:
        expression = source[role]
        if aggregate and role in MEASURE_ROLES:
            expression = f"SUM({expression})"
        elif aggregate and role == "practice_name":
            expression = f"MAX({expression})"
        selected.append(f"{expression} AS {outputs[role]}")
    conditions = []
    for key, codes in _normalise_where(where).items():
        column = _resolve(FILTER_COLUMNS.get(key, (key,)), fields, f"{key} filter", table)
        conditions.append(f"{column} IN ({', '.join(sql_literal(c) for c in codes)})")
    sql = f"SELECT {', '.join(selected)} FROM {sql_table(table)}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if aggregate:
        keys = [source[role] for role in KEY_ROLES]
        sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}"
    else:
        # Every selected column: pages need a total order, and rows may share the store's key.
        order = [source[r] for r in (*KEY_ROLES, *MEASURE_ROLES, "practice_name")]
        sql += f" ORDER BY {', '.join(order)}"
    return sql


def _fetch_month_sql(client: CkanClient, resource: CkanResource, month: str, out_dir: Path,
                     cache_dir: Path, dataset: str, where: dict[str, list[str]], aggregate: bool,
                     page_size: int) -> FetchedFile:
    target = out_dir / f"epd_{month.replace('-', '')}.csv"
    manifest = _Manifest(cache_dir)
    fingerprint = hashlib.sha256(json.dumps(
        {"base": client.base_url, "table": resource.table, "dataset": dataset, "where": where,
         "aggregate": aggregate, "columns": output_columns(dataset), "v": 1},
        sort_keys=True).encode()).hexdigest()
    entry = _output_is_current(manifest, target, fingerprint)
    if entry:
        client.say(f"{month}: cached ({entry.get('rows') or 0:,} rows in {target.name})")
        return FetchedFile(target, entry.get("rows"), entry["size"], entry["sha256"],
                           entry["source_url"], cached=True)
    try:
        fields = client.datastore_fields(resource.table)
    except FetchError as exc:
        fields = []
        client.say(f"{resource.table}: could not list columns ({exc}); assuming the usual names")
    fields = fields or _assumed_fields(dataset, month)
    sql = build_epd_sql(resource.table, fields, dataset, where, aggregate)
    source_url = client.action_url("datastore_search_sql", resource_id=resource.table, sql=sql)
    columns = output_columns(dataset)
    numeric = [dict(zip(EPD_ROLES, columns, strict=True))[r] for r in NUMERIC_ROLES]
    frame = client.datastore_search_sql(resource.table, sql, page_size=page_size,
                                        numeric_columns=numeric, cache_dir=cache_dir)
    missing = [c for c in columns if c not in frame.columns]
    if len(frame) and missing:
        raise FetchError(f"{resource.table}: the portal's answer lacks {', '.join(missing)}.")
    frame = frame.reindex(columns=columns)
    year_month = frame["YEAR_MONTH"].astype("str").str.replace(r"\.0$|[-_]", "", regex=True)
    wrong = year_month[year_month != month.replace("-", "")]
    if len(wrong):
        raise FetchError(f"{resource.table}: expected rows for {month} but got YEAR_MONTH "
                         f"{', '.join(sorted(wrong.unique())[:3])}.")
    frame["YEAR_MONTH"] = year_month
    items_column = columns[EPD_ROLES.index("items")]
    items = frame[items_column]
    if len(items) and items.notna().all() and (items == items.round()).all():
        frame[items_column] = items.astype("Int64")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(frame, target, spreadsheet_safe=False)  # a cache of published rows: kept exact
    client.say(f"{month}: {len(frame):,} rows written to {target.name}")
    return _record_output(manifest, target, fingerprint, _sha256_file(target), len(frame),
                          source_url)


def _fetch_month_full(client: CkanClient, resource: CkanResource, month: str, out_dir: Path,
                      cache_dir: Path) -> FetchedFile:
    url = resource.url
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{resource.name} ({month}) has no downloadable file address "
                         f"({url!r}); use sql mode instead of --full.")
    got = download(url, cache_dir / _cache_name(url), client=client)
    stem = f"epd_{month.replace('-', '')}"
    lower = _safe_name(url).lower()
    is_zip = lower.endswith(".zip") or zipfile.is_zipfile(got.path)
    target = out_dir / (f"{stem}.csv.gz" if lower.endswith(".gz") else f"{stem}.csv")
    manifest = _Manifest(cache_dir)
    fingerprint = f"{'unzip' if is_zip else 'copy'}:{got.sha256}"
    entry = _output_is_current(manifest, target, fingerprint)
    if entry:
        return FetchedFile(target, None, entry["size"], entry["sha256"], url, got.cached)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_zip:
        digest = _extract_csv(got.path, target, url)
    else:
        _place(got.path, target)
        digest = got.sha256
    placed = _record_output(manifest, target, fingerprint, digest, None, url)
    placed.cached = got.cached
    return placed


def fetch_epd(months: list[str], out_dir: str | os.PathLike[str], *, dataset: str = "epd-snomed",
              where: Mapping[str, Iterable[str]] | None = None, mode: str = "sql",
              aggregate: bool | None = None, client: CkanClient | None = None,
              cache_dir: str | os.PathLike[str] | None = None,
              page_size: int = DEFAULT_PAGE_SIZE, progress: Say | None = None) -> list[FetchedFile]:
    """Fetch months of the English Prescribing Dataset into ``out_dir`` as ``epd_YYYYMM.csv``.

    Parameters
    ----------
    months : list of str
        ``YYYY-MM`` months; each must be published in ``dataset``.
    out_dir : path
        Folder for the files a run reads (``data.epd`` in the run file).
    dataset : {"epd-snomed", "epd"}
        ``epd-snomed``: EPD with SNOMED code (Nov 2020 onwards, current).
        ``epd``: the original EPD (Jan 2014 to Jun 2025, retired).
    where : dict, optional
        Server-side filter, sql mode only. Keys are organisation levels
        (``practice``, ``sub_icb``, ``icb``, ``region``), mapped to the right
        column for each month's era (ICB_CODE, STP_CODE or AREA_TEAM_CODE for
        ``icb``; PCO_CODE, where ``04Y`` becomes ``04Y00``, for ``sub_icb``),
        or literal column names such as ``"ICB_CODE"``. Values are lists of
        codes; several keys must all match.
    mode : {"sql", "full"}
        ``sql`` queries the ten columns moopt reads; ``full`` downloads each
        month's whole published file (several GB) into the cache.
    aggregate : bool, optional
        sql mode: group by month, practice, BNF code and quantity per item and
        sum the measures on the server. Default: on for ``epd-snomed`` (several
        SNOMED products can share one BNF code, and the store rejects repeated
        keys), off for ``epd`` (one row per key already).
    client : CkanClient, optional
        Portal client (transport, retries); default the NHSBSA portal.
    cache_dir : path, optional
        Downloads and ``manifest.json``; default ``out_dir/../cache``.
    page_size : int
        Rows per ``datastore_search_sql`` request.
    progress : callable, optional
        Receives progress messages (used when ``client`` is not given).

    Returns
    -------
    list of FetchedFile
        One per month, oldest first. ``rows`` is None in full mode (the file
        is not parsed here; the store counts rows on ingest).

    Notes
    -----
    England values and national deciles are computed from whatever is in the
    store: a run fed one ICB's practices compares them only with each other.
    Fetch national data (``mode="full"``) for national comparators.
    """
    spec = _dataset(dataset)
    if mode not in ("sql", "full"):
        raise FetchError(f"mode must be 'sql' or 'full', not {mode!r}.")
    if isinstance(months, str) or not months:
        raise FetchError("months must be a non-empty list of YYYY-MM months, e.g. ['2024-01'].")
    wanted = sorted({_month(m) for m in months})
    filters = _normalise_where(where)
    if mode == "full" and filters:
        raise FetchError("Filters (where / --icb / --sub-icb / --practice) apply to sql mode only: "
                         "full mode downloads whole national files.")
    if aggregate is None:
        aggregate = dataset == "epd-snomed"
    client = client or CkanClient(progress=progress)
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out_dir.parent / "cache"
    resources = client.package_show(spec.ckan_id)
    chosen = {month: pick_resource(resources, month, dataset) for month in wanted}
    if mode == "sql" and not filters:
        client.say("no organisation filter: each month is the whole of England (~18 million rows, "
                   "thousands of pages); --full is usually faster for national data")
    fetched = []
    for number, month in enumerate(wanted, 1):
        resource = chosen[month]
        client.say(f"{month} ({number}/{len(wanted)}): {resource.table}, {mode} mode")
        if mode == "sql":
            fetched.append(_fetch_month_sql(client, resource, month, out_dir, cache, dataset,
                                            filters, aggregate, page_size))
        else:
            fetched.append(_fetch_month_full(client, resource, month, out_dir, cache))
    return fetched


# -- command line ----------------------------------------------------------------------------------


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``moopt fetch`` options to ``parser``."""
    parser.add_argument("--months", help="months to fetch: a range 2024-01:2024-03 and/or a comma "
                        "list (default: the run's period, period.end and period.months)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="epd-snomed",
                        help="epd-snomed: EPD with SNOMED code, Nov 2020 on (default); "
                             "epd: the original EPD, 2014 to Jun 2025")
    parser.add_argument("--icb", help="comma-separated ICB codes to keep (e.g. QNC)")
    parser.add_argument("--sub-icb", dest="sub_icb",
                        help="comma-separated sub-ICB location (CCG) codes to keep (e.g. 04Y)")
    parser.add_argument("--practice", help="comma-separated practice codes to keep")
    parser.add_argument("--full", action="store_true",
                        help="download each month's whole national file instead of querying")
    parser.add_argument("--aggregate", action=argparse.BooleanOptionalAction, default=None,
                        help="sum rows sharing month, practice, BNF code and quantity on the "
                             "server (default: on for epd-snomed, off for epd)")
    parser.add_argument("--url", help="download this one file instead (list sizes, ODS files)")
    parser.add_argument("--sha256", help="expected SHA-256 of the --url file")
    parser.add_argument("--out", help="folder for the fetched files "
                        "(default <outputs>/data/fetched)")
    parser.add_argument("--cache", help="download cache folder (default <out>/../cache)")
    parser.add_argument("--page-size", dest="page_size", type=int, default=DEFAULT_PAGE_SIZE,
                        help=f"rows per portal request in sql mode (default {DEFAULT_PAGE_SIZE:,})")


def _codes(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _display_path(path: Path, base: Path | None) -> str:
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return path.resolve().as_posix()


def run_fetch_command(args: argparse.Namespace, say: Say, config=None, *,
                      client: CkanClient | None = None) -> int:
    """Carry out ``moopt fetch``; return 0 on success (errors raise :class:`FetchError`).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed with the options from :func:`add_fetch_arguments`.
    say : callable
        Progress messages.
    config : moopt.config.RunConfig, optional
        The run: without ``--months``, its ``period_end`` ("latest" asks the
        portal for the newest month) and ``period_months`` choose the months;
        its ``outputs_dir`` gives the default output folder.
    client : CkanClient, optional
        For tests (a recorded transport); default the NHSBSA portal.
    """
    def get(name: str, default: Any = None) -> Any:
        return getattr(args, name, default)

    outputs = Path(config.outputs_dir) if config is not None else Path("outputs")
    out_dir = Path(get("out") or outputs / "data" / "fetched")
    cache_dir = Path(get("cache") or out_dir.parent / "cache")
    client = client or CkanClient(progress=say)
    if client.say is _quiet:
        client.say = say
    project = Path(config.project_dir) if config is not None else None

    if get("url"):
        if get("full") or get("icb") or get("sub_icb") or get("practice") or get("months"):
            raise FetchError("--url downloads one file; leave out --months, --full and the "
                             "organisation filters.")
        started = time.perf_counter()
        files = fetch_url(get("url"), out_dir, get("sha256"), client=client, cache_dir=cache_dir)
        _summarise(files, out_dir, time.perf_counter() - started, project)
        print("# Name the file in your run file, e.g. under data.list_sizes or data.organisations:")
        for item in files:
            print(f"#   - {_display_path(item.path, project)}")
        return 0
    if get("sha256"):
        raise FetchError("--sha256 checks a --url download; EPD files are checked by size and "
                         "their recorded hash.")

    dataset = get("dataset") or "epd-snomed"
    if get("months"):
        months = parse_months(get("months"))
    elif config is not None:
        end = config.period_end
        if end == "latest":
            end = latest_month(client, dataset)
            say(f"newest month on the portal: {end}")
        months = month_range(end, int(config.period_months))
    else:
        raise FetchError("Say which months to fetch, e.g. --months 2024-01:2024-03 "
                         "(or run with a parameter file whose period sets them).")
    where = {level: _codes(get(level)) for level in ("icb", "sub_icb", "practice")
             if _codes(get(level))}
    say(f"fetching {len(months)} month(s) of {dataset} ({months[0]} to {months[-1]}) "
        f"into {out_dir}" + (f", filter {where}" if where else ""))
    started = time.perf_counter()
    files = fetch_epd(months, out_dir, dataset=dataset, where=where or None,
                      mode="full" if get("full") else "sql", aggregate=get("aggregate"),
                      client=client, cache_dir=cache_dir,
                      page_size=get("page_size") or DEFAULT_PAGE_SIZE)
    _summarise(files, out_dir, time.perf_counter() - started, project)
    print("# Paste into your run file (data.source: files also needs list_sizes and "
          "organisations):")
    print("data:")
    print("  epd:")
    for item in files:
        print(f"    - {_display_path(item.path, project)}")
    return 0


def _summarise(files: list[FetchedFile], out_dir: Path, seconds: float,
               project: Path | None) -> None:
    for item in files:
        rows = f"{item.rows:,} rows" if item.rows is not None else "rows counted on ingest"
        state = "cached" if item.cached else "downloaded"
        print(f"  {_display_path(item.path, project)}: {rows}, {item.bytes / 1e6:,.1f} MB, "
              f"sha256 {item.sha256[:12]}…, {state}")
    fresh = sum(not f.cached for f in files)
    total_rows = sum(f.rows or 0 for f in files)
    print(f"fetched {len(files)} file(s) into {_display_path(out_dir, project)} in {seconds:.0f}s: "
          f"{fresh} downloaded, {len(files) - fresh} cached, {total_rows:,} rows, "
          f"{sum(f.bytes for f in files) / 1e6:,.1f} MB")


__all__ = [
    "CkanClient", "CkanResource", "DATASETS", "FetchError", "FetchedFile", "Response",
    "UrllibTransport", "add_fetch_arguments", "build_epd_sql", "check_org_code", "download",
    "fetch_epd", "fetch_url", "latest_month", "month_range", "output_columns", "parse_months",
    "pick_resource", "resources_by_month", "run_fetch_command", "sql_identifier", "sql_literal",
    "sql_table",
]
