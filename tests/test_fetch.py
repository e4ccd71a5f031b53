"""``moopt fetch`` against recorded portal answers (tests/data/ckan); no test uses the network."""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import re
import socket
import urllib.parse
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from moopt.sources import fetch
from moopt.sources.fetch import (CkanClient, FetchError, Response, add_fetch_arguments,
                                 build_epd_sql, check_org_code, download, fetch_epd, fetch_url,
                                 month_range, output_columns, parse_months, pick_resource,
                                 run_fetch_command, sql_identifier, sql_literal)
from moopt.store import Store

RECORDED = Path(__file__).resolve().parent / "data" / "ckan"
BASE = fetch.DEFAULT_BASE_URL
EPD_ID = "english-prescribing-data-epd"
SNOMED_ID = "english-prescribing-dataset-epd-with-snomed-code"
GC_URL = ("https://storage.googleapis.com/nhsbsa-datastore-results/query-7f3c2a91/"
          "result-000000000000.csv.gz")
MAP_HEADER = ["PRACTICE_CODE", "PRACTICE_NAME", "PCN_CODE", "PCN_NAME", "SUB_ICB_LOCATION_CODE",
              "SUB_ICB_LOCATION_NAME", "ICB_CODE", "ICB_NAME", "COMM_REGION_CODE",
              "COMM_REGION_NAME"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket or resolve a name fails the test loudly."""

    def blocked(*args, **kwargs):
        raise OSError("network blocked in tests")

    monkeypatch.setattr(socket, "socket", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def zipped(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, data)
    return buffer.getvalue()


class Portal:
    """A fake transport: answers from tests/data/ckan keyed by URL; records every request."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.requests: list[tuple[str, dict]] = []
        self.files = files or {}

    def sql_requests(self) -> list[str]:
        return [urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["sql"][0]
                for url, _ in self.requests if "datastore_search_sql" in url]

    def __call__(self, url: str, headers) -> Response:
        self.requests.append((url, dict(headers)))
        if url in self.files:
            return Response(200, {"Content-Length": str(len(self.files[url]))}, self.files[url])
        if url == GC_URL:
            return Response(200, {}, gzip.compress(recorded("sql_EPD_202402_truncated_result.csv")))
        parts = urllib.parse.urlsplit(url)
        action = parts.path.rsplit("/", 1)[-1]
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query).items()}
        name = None
        if action == "package_show":
            name = {EPD_ID: "package_show_epd.json",
                    SNOMED_ID: "package_show_epd_snomed.json"}.get(query.get("id"))
        elif action == "datastore_search" and query.get("limit") == "0":
            name = f"datastore_fields_{query['resource_id']}.json"
        elif action == "datastore_search_sql":
            offset = re.search(r"LIMIT \d+ OFFSET (\d+)$", query["sql"]).group(1)
            table = query["resource_id"]
            name = (f"{table}_truncated.json" if table == "EPD_202402"
                    else f"{table}_offset_{offset}.json")
            name = "sql_" + name
        if name and (RECORDED / name).exists():
            return Response(200, {"Content-Type": "application/json"}, recorded(name))
        return Response(404, {}, recorded("error_not_found.json"))


def client_for(transport, sleeps: list | None = None, retries: int = 4,
               messages: list | None = None) -> CkanClient:
    return CkanClient(transport=transport, retries=retries,
                      sleep=(sleeps.append if sleeps is not None else lambda s: None),
                      progress=(messages.append if messages is not None else None))


def write_map(path: Path, practices: dict[str, str]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MAP_HEADER)
        for code, name in practices.items():
            writer.writerow([code, name, "U12345", "MOORLANDS PCN", "04Y",
                             "NHS STAFFORDSHIRE - 04Y",
                             "QNC", "NHS STAFFORDSHIRE AND STOKE-ON-TRENT ICB", "Y60", "MIDLANDS"])
    return path


def ingest(tmp_path: Path, epd_file: Path):
    practices = {"M83001": "MOORLANDS MEDICAL CENTRE", "M83002": "HIGH STREET SURGERY"}
    with Store(tmp_path / "store" / "moopt.duckdb") as store:
        store.ingest_organisations(write_map(tmp_path / "map.csv", practices))
        return store.ingest_prescribing(epd_file, max_reject_share=0.0)


# -- the default transport really is blocked -----------------------------------------------------


def test_default_transport_cannot_reach_the_network_in_tests():
    client = CkanClient(retries=0, sleep=lambda s: None)
    with pytest.raises(FetchError, match="network blocked in tests"):
        client.package_show(EPD_ID)


# -- months and resources --------------------------------------------------------------------


def test_parse_months_ranges_lists_and_errors():
    assert parse_months("2024-11:2025-02") == ["2024-11", "2024-12", "2025-01", "2025-02"]
    assert parse_months("2024-03, 202401,2024-03") == ["2024-01", "2024-03"]
    assert month_range("2025-01", 3) == ["2024-11", "2024-12", "2025-01"]
    with pytest.raises(FetchError, match="runs backwards"):
        parse_months("2024-03:2024-01")
    with pytest.raises(FetchError, match="not a month"):
        parse_months("2024-13")


def test_package_show_parses_resources_and_picks_the_month():
    portal = Portal()
    client = client_for(portal)
    resources = client.package_show(EPD_ID)
    assert [r.table for r in resources][:4] == ["EPD_202312", "EPD_202401", "EPD_202402",
                                                "EPD_202403"]
    chosen = pick_resource(resources, "2024-02", "epd")
    assert (chosen.name, chosen.format, chosen.month) == ("EPD_202402", "CSV", "2024-02")
    assert chosen.url.endswith("EPD_202402.zip")
    client.package_show(EPD_ID)  # remembered: no second request
    assert len(portal.requests) == 1
    assert portal.requests[0][0] == f"{BASE}package_show?id={EPD_ID}"


def test_missing_month_error_lists_the_months_available():
    resources = client_for(Portal()).package_show(EPD_ID)
    with pytest.raises(FetchError) as caught:
        pick_resource(resources, "2024-06", "epd")
    message = str(caught.value)
    assert "2024-06" in message and "EPD_202406" in message
    assert "2023-12 to 2024-03 (4 months)" in message
    assert "epd-snomed" in message  # the original EPD ends; the hint names the successor
    snomed = client_for(Portal()).package_show(SNOMED_ID)
    with pytest.raises(FetchError, match="--dataset epd "):
        pick_resource(snomed, "2019-01", "epd-snomed")


# -- SQL paging ---------------------------------------------------------------------------------


def test_sql_paging_requests_exact_pages_and_converts_numbers():
    portal = Portal()
    client = client_for(portal)
    sql = "SELECT * FROM `EPD_202401` WHERE ICB_CODE = 'QNC' ORDER BY PRACTICE_CODE"
    frame = client.datastore_search_sql("EPD_202401", sql, page_size=2,
                                        numeric_columns=["QUANTITY", "ITEMS", "NIC"])
    assert portal.sql_requests() == [f"{sql} LIMIT 2 OFFSET 0", f"{sql} LIMIT 2 OFFSET 2",
                                     f"{sql} LIMIT 2 OFFSET 4"]
    for url, _ in portal.requests:
        assert url.startswith(f"{BASE}datastore_search_sql?resource_id=EPD_202401&sql=")
    # Rows in page order; numbers sent as "10" / "8.4" arrive as numbers.
    assert frame["ITEMS"].tolist() == [3, 1, 10, 2, 4]
    assert frame["QUANTITY"].tolist() == [28.0, 56.0, 28.0, 100.0, 56.0]
    assert frame["NIC"].sum() == pytest.approx(2.58 + 1.72 + 8.4 + 2.9 + 6.12)
    assert frame["ITEMS"].dtype.kind in "if"
    # Codes stay text: leading zeros kept, YEAR_MONTH as given (int or string) becomes "202401".
    assert frame["BNF_CODE"].tolist()[0] == "0103050P0AAAAAA"
    assert set(frame["YEAR_MONTH"]) == {"202401"}


def test_sql_refuses_limit_semicolons_and_non_numbers():
    client = client_for(Portal())
    with pytest.raises(FetchError, match="without LIMIT"):
        client.datastore_search_sql("EPD_202401", "SELECT * FROM `EPD_202401` LIMIT 5")
    with pytest.raises(FetchError, match="one statement"):
        client.datastore_search_sql("EPD_202401", "SELECT 1; DROP TABLE x")
    with pytest.raises(FetchError, match="not numbers"):
        client.datastore_search_sql("EPD_202401", "SELECT * FROM `EPD_202401`", page_size=2,
                                    numeric_columns=["PRACTICE_NAME"])


def test_truncated_answer_reads_the_gzip_csv_instead(tmp_path):
    portal = Portal()
    client = client_for(portal)
    frame = client.datastore_search_sql("EPD_202402", "SELECT * FROM `EPD_202402`",
                                        numeric_columns=["ITEMS", "NIC"], cache_dir=tmp_path)
    expected = list(csv.DictReader(io.StringIO(
        recorded("sql_EPD_202402_truncated_result.csv").decode())))
    assert len(frame) == len(expected) == 3  # the file's rows, not the one JSON record
    assert frame["ITEMS"].tolist() == [int(r["ITEMS"]) for r in expected]
    assert frame["BNF_CODE"].tolist() == [r["BNF_CODE"] for r in expected]
    assert [url for url, _ in portal.requests][-1] == GC_URL
    assert len(portal.sql_requests()) == 1
    assert not list(tmp_path.iterdir())  # the temporary result file is gone


# -- retries and errors -------------------------------------------------------------------------


def test_retries_on_503_then_succeeds_without_real_waiting():
    answers = [Response(503, {}, b"busy"), Response(503, {}, b"busy"),
               Response(200, {}, recorded("package_show_epd.json"))]
    calls = []

    def flaky(url, headers):
        calls.append(url)
        return answers[len(calls) - 1]

    sleeps, messages = [], []
    resources = client_for(flaky, sleeps, messages=messages).package_show(EPD_ID)
    assert len(resources) == 5
    assert len(calls) == 3
    assert sleeps == [1.0, 2.0]  # exponential backoff, injected sleep
    assert sum("retry" in m and "HTTP 503" in m for m in messages) == 2


def test_gives_up_after_the_retries_with_a_clear_error():
    sleeps = []
    calls = []

    def down(url, headers):
        calls.append(url)
        return Response(503, {"Retry-After": "7"}, b"")

    with pytest.raises(FetchError) as caught:
        client_for(down, sleeps, retries=2).package_show(EPD_ID)
    message = str(caught.value)
    assert "3 attempt(s)" in message and "HTTP 503" in message
    assert f"package_show?id={EPD_ID}" in message
    assert len(calls) == 3
    assert sleeps == [7.0, 7.0]  # the server's Retry-After beats the shorter backoff


def test_connection_errors_are_retried():
    calls = []

    def refused_once(url, headers):
        calls.append(url)
        if len(calls) == 1:
            raise ConnectionRefusedError("refused")
        return Response(200, {}, recorded("package_show_epd.json"))

    sleeps = []
    assert client_for(refused_once, sleeps).package_show(EPD_ID)
    assert sleeps == [1.0]


def test_4xx_and_ckan_errors_are_not_retried_and_show_the_portal_message():
    sleeps = []
    portal = Portal()
    with pytest.raises(FetchError) as caught:
        client_for(portal, sleeps).package_show("no-such-dataset")
    assert "HTTP 404" in str(caught.value) and "Not found" in str(caught.value)
    assert "package_show?id=no-such-dataset" in str(caught.value)
    assert sleeps == [] and len(portal.requests) == 1

    def refuses(url, headers):  # CKAN may also say success: false with HTTP 200
        return Response(200, {}, recorded("error_sql_validation.json"))

    with pytest.raises(FetchError, match="Unrecognized name: BNF_CODEX"):
        client_for(refuses).datastore_search_sql("EPD_202401", "SELECT BNF_CODEX FROM `EPD_202401`")


# -- downloads ------------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes
PAYLOAD_URL = "https://files.digital.nhs.uk/AB/CD12EF/gp-reg-pat-prac-quin-age.csv"


def breaking_body(data: bytes, cut: int):
    def chunks():
        yield data[:cut]
        raise ConnectionResetError("connection reset by peer")
    return chunks()


def test_resumable_download_continues_with_a_range_request(tmp_path):
    cut = 100_000
    seen = []

    def server(url, headers):
        seen.append(dict(headers))
        if len(seen) == 1:
            return Response(200, {"Content-Length": str(len(PAYLOAD)), "ETag": '"v1"'},
                            breaking_body(PAYLOAD, cut))
        assert headers.get("Range") == f"bytes={cut}-"
        return Response(206, {"Content-Range": f"bytes {cut}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}",
                              "ETag": '"v1"'}, PAYLOAD[cut:])

    sleeps = []
    dest = tmp_path / "cache" / "list.csv"
    got = download(PAYLOAD_URL, dest, hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD),
                   client=client_for(server, sleeps))
    assert dest.read_bytes() == PAYLOAD
    assert seen[0] == {} and seen[1] == {"Range": f"bytes={cut}-", "If-Range": '"v1"'}
    assert len(sleeps) == 1
    assert (got.bytes, got.sha256, got.cached) == (
        len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest(), False)
    entry = json.loads((dest.parent / "manifest.json").read_text())["files"]["list.csv"]
    assert entry["url"] == PAYLOAD_URL and entry["size"] == len(PAYLOAD) and entry["etag"] == '"v1"'
    assert entry["fetched_at"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["list.csv", "manifest.json"]


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    seen = []

    def server(url, headers):
        seen.append(dict(headers))
        if len(seen) == 1:
            return Response(200, {"Content-Length": str(len(PAYLOAD))},
                            breaking_body(PAYLOAD, 5000))
        return Response(200, {"Content-Length": str(len(PAYLOAD))}, PAYLOAD)  # Range ignored

    dest = tmp_path / "list.csv"
    download(PAYLOAD_URL, dest, client=client_for(server))
    assert seen[1].get("Range") == "bytes=5000-"
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_raises_and_leaves_no_file(tmp_path):
    wrong = "0" * 64

    def server(url, headers):
        return Response(200, {}, PAYLOAD)

    dest = tmp_path / "list.csv"
    with pytest.raises(FetchError) as caught:
        download(PAYLOAD_URL, dest, wrong, client=client_for(server))
    message = str(caught.value)
    assert "list.csv" in message and wrong in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert [p.name for p in tmp_path.iterdir()] == []  # no file, no .part left looking complete


def test_cache_hit_makes_no_request_and_a_damaged_copy_is_fetched_again(tmp_path):
    portal = Portal({PAYLOAD_URL: PAYLOAD})
    dest = tmp_path / "list.csv"
    assert download(PAYLOAD_URL, dest, client=client_for(portal)).cached is False

    def must_not_be_called(url, headers):
        raise AssertionError("the transport was called for a cached file")

    again = download(PAYLOAD_URL, dest, client=client_for(must_not_be_called))
    assert again.cached is True and again.sha256 == hashlib.sha256(PAYLOAD).hexdigest()

    dest.write_bytes(PAYLOAD[:-1] + b"x")  # same size, different content
    refreshed = download(PAYLOAD_URL, dest, client=client_for(portal))
    assert refreshed.cached is False and dest.read_bytes() == PAYLOAD
    assert len(portal.requests) == 2


def test_fetch_url_unpacks_a_single_csv_zip_and_checks_the_hash(tmp_path):
    csv_bytes = b'"A81001","THE DENSHAM SURGERY","Y54","Q74"\n'
    archive = zipped("epraccur.csv", csv_bytes)
    url = "https://files.digital.nhs.uk/assets/ods/current/epraccur.zip"
    portal = Portal({url: archive})
    files = fetch_url(url, tmp_path / "fetched", hashlib.sha256(archive).hexdigest(),
                      client=client_for(portal))
    assert [f.path.name for f in files] == ["epraccur.csv"]
    assert files[0].path.read_bytes() == csv_bytes
    assert files[0].sha256 == hashlib.sha256(csv_bytes).hexdigest()
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_url(url.replace("epraccur", "eccg"), tmp_path / "fetched", "a" * 64,
                  client=client_for(Portal({url.replace("epraccur", "eccg"): archive})))


# -- SQL safety -----------------------------------------------------------------------------------


def test_sql_literals_escape_quotes_and_codes_reject_injection():
    attack = "QNC' OR '1'='1"
    quoted = sql_literal(attack)
    assert quoted == "'QNC'' OR ''1''=''1'"
    assert "'" not in quoted[1:-1].replace("''", "")  # one literal: every inner quote is doubled
    with pytest.raises(FetchError, match="backslash"):
        sql_literal("QNC\\' OR 1=1 --")
    with pytest.raises(FetchError, match="control"):
        sql_literal("QNC\n")
    for code in (attack, "QNC;", "Q NC", "", "ABCDEFGHIJKLM"):
        with pytest.raises(FetchError):
            check_org_code(code)
    assert check_org_code(" qnc ") == "QNC"
    for name in ("ICB_CODE; DROP TABLE x", "ICB_CODE`", "1CODE", "ICB-CODE"):
        with pytest.raises(FetchError):
            sql_identifier(name)
    fields = json.loads(recorded("datastore_fields_EPD_202401.json"))["result"]["fields"]
    names = [f["id"] for f in fields]
    with pytest.raises(FetchError):
        build_epd_sql("EPD_202401", names, "epd", {"icb": ["QNC') OR (1=1"]})
    with pytest.raises(FetchError):
        build_epd_sql("EPD_202401", names, "epd", {"ICB_CODE` --": ["QNC"]})
    with pytest.raises(FetchError):
        build_epd_sql("EPD_202401`; --", names, "epd")


# -- fetch_epd ---------------------------------------------------------------------------------


def test_fetch_epd_sql_writes_an_ingestible_epd_file(tmp_path):
    portal = Portal()
    out = tmp_path / "fetched"
    files = fetch_epd(["2024-01"], out, dataset="epd", where={"icb": ["qnc"]}, page_size=2,
                      client=client_for(portal), cache_dir=tmp_path / "cache")
    (got,) = files
    assert got.path == out / "epd_202401.csv" and got.rows == 5 and not got.cached
    assert got.sha256 == hashlib.sha256(got.path.read_bytes()).hexdigest()
    with open(got.path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == output_columns("epd") == [
        "YEAR_MONTH", "PRACTICE_NAME", "PRACTICE_CODE", "BNF_CODE", "QUANTITY", "ITEMS",
        "TOTAL_QUANTITY", "ADQUSAGE", "NIC", "ACTUAL_COST"]
    assert [r[5] for r in rows[1:]] == ["3", "1", "10", "2", "4"]  # whole items, not "3.0"
    sqls = portal.sql_requests()
    assert [s[-16:] for s in sqls] == ["LIMIT 2 OFFSET 0", "LIMIT 2 OFFSET 2", "LIMIT 2 OFFSET 4"]
    assert "FROM `EPD_202401` WHERE ICB_CODE IN ('QNC') ORDER BY" in sqls[0]
    assert "GROUP BY" not in sqls[0]

    report = ingest(tmp_path, got.path)
    assert report.rows_read == report.rows_accepted == got.rows
    assert report.rows_rejected == 0 and report.months == ["2024-01"]

    # A second run finds the file unchanged and asks the portal for nothing but the resource list.
    before = len(portal.requests)
    again = fetch_epd(["2024-01"], out, dataset="epd", where={"icb": ["QNC"]}, page_size=2,
                      client=client_for(portal), cache_dir=tmp_path / "cache")
    assert again[0].cached and again[0].rows == 5 and again[0].sha256 == got.sha256
    assert [u for u, _ in portal.requests[before:]] == [f"{BASE}package_show?id={EPD_ID}"]


def test_fetch_epd_snomed_aggregates_on_the_server_with_the_new_column_names(tmp_path):
    portal = Portal()
    (got,) = fetch_epd(["2025-04"], tmp_path / "out", dataset="epd-snomed",
                       where={"sub_icb": ["04Y"]}, client=client_for(portal))
    (sql,) = portal.sql_requests()
    assert "PCO_CODE IN ('04Y00')" in sql  # EPD's PCO_CODE is the sub-ICB code + 00
    assert "SUM(ITEMS) AS ITEMS" in sql and "SUM(ADQ_USAGE) AS ADQ_USAGE" in sql
    assert "MAX(PRACTICE_NAME) AS PRACTICE_NAME" in sql
    assert "GROUP BY YEAR_MONTH, PRACTICE_CODE, BNF_PRESENTATION_CODE, QUANTITY" in sql
    with open(got.path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == output_columns("epd-snomed")
    assert {r["YEAR_MONTH"] for r in rows} == {"202504"}  # "2025-04" normalised
    report = ingest(tmp_path, got.path)
    assert report.rows_accepted == got.rows == 2 and report.rows_rejected == 0


def test_fetch_epd_full_downloads_unpacks_and_reuses_the_cache(tmp_path):
    month_csv = recorded("epd_full_202401.csv")
    url = "https://storage.googleapis.com/nhsbsa-opendata/epd/EPD_202401.zip"
    portal = Portal({url: zipped("EPD_202401.csv", month_csv)})
    (got,) = fetch_epd(["2024-01"], tmp_path / "out", dataset="epd", mode="full",
                       client=client_for(portal))
    assert got.path.name == "epd_202401.csv" and got.path.read_bytes() == month_csv
    assert got.rows is None and not got.cached and got.source_url == url
    report = ingest(tmp_path, got.path)
    assert report.rows_accepted == 2 and report.rows_rejected == 0
    portal.requests.clear()
    (again,) = fetch_epd(["2024-01"], tmp_path / "out", dataset="epd", mode="full",
                         client=client_for(portal))
    assert again.cached and again.sha256 == got.sha256
    assert url not in [u for u, _ in portal.requests]
    with pytest.raises(FetchError, match="sql mode only"):
        fetch_epd(["2024-01"], tmp_path / "out", dataset="epd", mode="full",
                  where={"icb": ["QNC"]}, client=client_for(portal))


# -- the command ----------------------------------------------------------------------------------


def fetch_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moopt fetch")
    add_fetch_arguments(parser)
    return parser.parse_args(argv)


def test_run_fetch_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "outputs" / "data" / "fetched"
    args = fetch_args(["--months", "2024-01:2024-02", "--dataset", "epd", "--icb", "QNC",
                       "--page-size", "2", "--out", str(out)])
    messages = []
    portal = Portal()
    assert run_fetch_command(args, messages.append, None, client=client_for(portal)) == 0
    assert (out / "epd_202401.csv").exists() and (out / "epd_202402.csv").exists()
    assert (tmp_path / "outputs" / "data" / "cache" / "manifest.json").exists()
    printed = capsys.readouterr().out
    assert "data:\n  epd:\n" in printed
    assert re.search(r"    - \S*epd_202401\.csv\n    - \S*epd_202402\.csv", printed)
    assert "8 rows" in printed  # 5 + 3 rows fetched
    assert any("page 3" in m for m in messages)
    with open(out / "epd_202402.csv", newline="") as handle:
        assert sum(1 for _ in handle) == 4  # header + the truncated-answer file's 3 rows


def test_run_fetch_command_uses_the_run_period_and_asks_for_the_latest_month(tmp_path, capsys):
    config = SimpleNamespace(period_end="latest", period_months=1, outputs_dir=tmp_path / "outputs",
                             project_dir=tmp_path)
    messages = []
    assert run_fetch_command(fetch_args([]), messages.append, config,
                             client=client_for(Portal())) == 0
    made = tmp_path / "outputs" / "data" / "fetched" / "epd_202504.csv"
    assert made.exists()
    assert "newest month on the portal: 2025-04" in messages
    assert "    - outputs/data/fetched/epd_202504.csv" in capsys.readouterr().out
    with pytest.raises(FetchError, match="which months"):
        run_fetch_command(fetch_args([]), messages.append, None, client=client_for(Portal()))


def test_name_lookup_failure_is_not_retried_and_says_what_to_do():
    import socket
    import urllib.error

    from moopt.sources.fetch import CkanClient, FetchError

    calls = []

    def transport(url, headers):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    client = CkanClient(transport=transport, sleep=lambda s: calls.append(("slept", s)))
    with pytest.raises(FetchError, match="Cannot reach opendata.nhsbsa.net.*HTTPS_PROXY"):
        client.package_show("english-prescribing-data-epd")
    assert len(calls) == 1  # no retries, no waiting
