"""The foundation end to end: a check-in file becomes validated rows in the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine
from sluice.cli.runner import run_ingest
from tests.conftest import shared_file

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = (
    "user,timestamp,hours,project\n"
    "ned,26 сентября 2019 00:00,4.0,bizdev\n"
    "jaime,2018-12-20 00:00:00 UTC,1.5,project-00\n"
    "catelyn,2018-11-26 14:47:36.0429 UTC,0.08,security\n"
    "arya,09/27/2019 12:00 AM,24,infra\n"
    "sansa,09/27/2019 01:30 PM,0,infra\n"
)
BAD_ROWS = "bran,2019-01-01 00:00:00 UTC,25,infra\n,2019-01-01 00:00:00 UTC,1,infra\njon,not a time,1,infra\n"


def land(folder: Path, name: str, text: str) -> str:
    path = folder / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def rows(sql: str) -> list[tuple]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_loads_every_format_as_utc(sluice_env: Path) -> None:
    source = land(sluice_env, "dailycheckins.csv", GOOD)
    report = run_ingest(source, dataset="dailycheckins")
    assert (report.status, report.rows_read, report.rows_loaded, report.rows_quarantined) == (
        "success",
        5,
        5,
        0,
    )
    got = rows(
        "SELECT username, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), hours::text, "
        "_source_row FROM tm.daily_checkins ORDER BY _source_row"
    )
    assert got == [
        ("ned", "2019-09-26 00:00:00.000000", "4.00", 1),
        ("jaime", "2018-12-20 00:00:00.000000", "1.50", 2),
        ("catelyn", "2018-11-26 14:47:36.042900", "0.08", 3),
        ("arya", "2019-09-27 00:00:00.000000", "24.00", 4),
        ("sansa", "2019-09-27 13:30:00.000000", "0.00", 5),
    ]


def test_load_twice_skips_and_force_replaces(sluice_env: Path) -> None:
    source = land(sluice_env, "dailycheckins.csv", GOOD)
    first = run_ingest(source, dataset="dailycheckins")
    second = run_ingest(source, dataset="dailycheckins")
    assert (first.status, second.status, second.rows_loaded) == ("success", "skipped", 0)
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [(5,)]
    forced = run_ingest(source, dataset="dailycheckins", force=True)
    assert (forced.status, forced.rows_loaded) == ("success", 5)
    assert rows("SELECT count(*), count(DISTINCT _ingestion_id) FROM tm.daily_checkins") == [(5, 1)]
    assert rows("SELECT count(*) FROM sluice.file_loads") == [(1,)]


def test_soft_mode_loads_good_rows_and_quarantines_bad(sluice_env: Path) -> None:
    source = land(sluice_env, "dailycheckins.csv", GOOD + BAD_ROWS)
    report = run_ingest(source, dataset="dailycheckins", mode="soft")
    assert (report.status, report.rows_read, report.rows_loaded, report.rows_quarantined) == (
        "success",
        8,
        5,
        3,
    )
    quarantined = pd.read_csv(report.quarantine_uri, keep_default_na=False)
    assert sorted(zip(quarantined["row"], quarantined["column"], quarantined["value"], strict=True)) == [
        (6, "hours", "25"),
        (7, "user", ""),
        (8, "timestamp", "not a time"),
    ]
    assert set(quarantined["check"]) >= {"less_than_or_equal_to(24)"}
    assert Path(source).read_text(encoding="utf-8") == GOOD + BAD_ROWS  # the landed file is untouched


def test_hard_mode_loads_nothing_and_names_the_rows(sluice_env: Path) -> None:
    source = land(sluice_env, "dailycheckins.csv", GOOD + BAD_ROWS)
    report = run_ingest(source, dataset="dailycheckins", mode="hard")
    assert (report.status, report.state, report.rows_loaded) == ("failed", "validate", 0)
    assert "3 rows failed checks" in report.error and "row 6, column hours" in report.error
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [(0,)]
    assert report.quarantine_uri and Path(report.quarantine_uri).exists()
    states = rows("SELECT state, status FROM sluice.run_ledger ORDER BY seq")
    assert states == [("extract", "success"), ("transform", "success"), ("validate", "fail")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "file not found"),
        ("wrong.csv", "name,when,hours,project\nned,x,1,p\n", "missing required column(s) user, timestamp"),
        ("empty.csv", "", "empty file"),
    ],
)
def test_bad_input_is_one_clear_failure(
    sluice_env: Path, name: str, content: str | None, message: str
) -> None:
    source = str(sluice_env / "landing" / name)
    if content is not None:
        source = land(sluice_env, name, content)
    report = run_ingest(source, dataset="dailycheckins")
    assert report.status == "failed"
    assert message in report.error and name in report.error
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [(0,)]
    assert ("fail",) in rows("SELECT status FROM sluice.run_ledger")


def test_unknown_dataset_fails_with_the_registered_names(sluice_env: Path) -> None:
    source = land(sluice_env, "x.csv", GOOD)
    report = run_ingest(source, dataset="nope")
    assert report.status == "failed"
    assert "unknown dataset 'nope'" in report.error and "dailycheckins" in report.error


def test_a_key_no_dataset_claims_is_recorded_and_skipped_not_failed(sluice_env: Path) -> None:
    source = land(sluice_env, "exports/unrelated-report.csv", GOOD)
    report = run_ingest(source)
    assert report.status == "skipped"
    assert "no registered dataset claims this file's name" in report.error
    assert rows("SELECT state, status, source FROM sluice.run_ledger") == [("extract", "skipped", source)]
    assert rows("SELECT count(*) FROM sluice.file_loads") == [(0,)]


def test_a_mistyped_local_path_is_not_found_even_when_no_dataset_claims_its_name(sluice_env: Path) -> None:
    """`sluice ingest data/checkins.csv` with a typo said "no registered dataset claims this key; skipped", exit 0:
    a local file that is not there fails as not found; an unclaimed one that is there is skipped, saying how to
    load it."""
    missing = str(sluice_env / "landing" / "exports" / "no-such-report.csv")
    report = run_ingest(missing)
    assert (report.status, report.state) == ("failed", "extract")
    assert report.error == f"{missing}: file not found"
    assert rows("SELECT state, status, source FROM sluice.run_ledger") == [("extract", "fail", missing)]
    unclaimed = run_ingest(land(sluice_env, "exports/unrelated-report.csv", GOOD))
    assert unclaimed.status == "skipped" and "--dataset NAME loads it" in unclaimed.error


def test_reads_the_same_file_from_s3(sluice_env: Path, s3_bucket: str) -> None:
    import boto3

    boto3.client("s3").put_object(
        Bucket=s3_bucket, Key="tm/dailycheckins/2024/03/01/in.csv", Body=GOOD.encode()
    )
    report = run_ingest(f"s3://{s3_bucket}/tm/dailycheckins/2024/03/01/in.csv")
    assert (report.dataset, report.status, report.rows_loaded) == ("dailycheckins", "success", 5)
    assert rows("SELECT count(*) FROM tm.daily_checkins") == [(5,)]


def test_a_new_version_of_the_same_key_is_a_new_file(sluice_env: Path, s3_bucket: str) -> None:
    import boto3

    key = "tm/dailycheckins/2024/03/02/daily.csv"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key=key, Body=GOOD.encode())
    assert run_ingest(f"s3://{s3_bucket}/{key}").rows_loaded == 5
    assert run_ingest(f"s3://{s3_bucket}/{key}").status == "skipped"  # the same event again
    s3.put_object(Bucket=s3_bucket, Key=key, Body=(GOOD + "bran,2019-01-01 00:00:00 UTC,2,infra\n").encode())
    second = run_ingest(f"s3://{s3_bucket}/{key}")
    assert (second.status, second.rows_loaded) == ("success", 6)  # new content under the same key loads
    assert rows("SELECT count(*) FROM sluice.file_loads") == [(2,)]


@pytest.mark.acceptance
def test_real_sample_every_timestamp(sluice_env: Path) -> None:
    sample = shared_file("tm", "dailycheckins_sample.csv")
    report = run_ingest(str(sample), dataset="dailycheckins", mode="hard")
    assert (report.status, report.rows_loaded) == ("success", 2034)
    raw = pd.read_csv(sample, dtype=str, keep_default_na=False)
    loaded = pd.read_sql(
        "SELECT _source_row, timestamp FROM tm.daily_checkins ORDER BY _source_row", get_engine()
    )
    assert len(loaded) == len(raw) == 2034
    # An independent oracle: dateutil for ISO/US, a hand map for Russian months.
    from dateutil import parser as du

    ru = {
        "января": 1,
        "февраля": 2,
        "марта": 3,
        "апреля": 4,
        "мая": 5,
        "июня": 6,
        "июля": 7,
        "августа": 8,
        "сентября": 9,
        "октября": 10,
        "ноября": 11,
        "декабря": 12,
    }
    for text, got in zip(raw["timestamp"], loaded["timestamp"], strict=True):
        parts = text.split()
        if parts[1] in ru:
            hh, mm = parts[3].split(":")
            expected = pd.Timestamp(int(parts[2]), ru[parts[1]], int(parts[0]), int(hh), int(mm), tz="UTC")
        else:
            expected = pd.Timestamp(du.parse(text.replace(" UTC", ""))).tz_localize("UTC")
        assert got == expected, text


def test_chunked_and_unchunked_give_identical_tables(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.settings import reload_settings

    lines = [
        f"u{i % 7},2019-01-{1 + i % 28:02d} 10:00:00.{i:04d} UTC,{(i % 48) / 2},p{i % 3}\n"
        for i in range(1000)
    ]
    bad = "x,2019-01-01 00:00:00 UTC,99,p\n"
    text = "user,timestamp,hours,project\n" + "".join(lines[:500]) + bad + "".join(lines[500:]) + bad
    query = (
        "SELECT username, project, hours, timestamp, _source_row FROM tm.daily_checkins ORDER BY _source_row"
    )
    results = []
    for chunk_rows in (1_000_000, 64):
        monkeypatch.setenv("SLUICE_CHUNK_ROWS", str(chunk_rows))
        reload_settings()
        source = land(sluice_env, f"dailycheckins-{chunk_rows}.csv", text)
        report = run_ingest(source, dataset="dailycheckins", mode="soft")
        assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (1002, 1000, 2)
        quarantined = pd.read_csv(report.quarantine_uri)
        results.append((rows(query), sorted(quarantined["row"])))
        with get_engine().begin() as conn:
            conn.execute(sa.text("TRUNCATE tm.daily_checkins, sluice.file_loads"))
    assert results[0] == results[1]
    assert results[0][1] == [501, 1002] and len(results[0][0]) == 1000


def test_gzip_and_bom_and_crlf_simply_work(sluice_env: Path) -> None:
    import gzip

    path = sluice_env / "landing" / "dailycheckins.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\ufeff" + GOOD).replace("\n", "\r\n").encode()))
    report = run_ingest(str(path), dataset="dailycheckins")
    assert (report.status, report.rows_loaded) == ("success", 5)
    assert rows("SELECT project FROM tm.daily_checkins ORDER BY _source_row LIMIT 1") == [("bizdev",)]


def test_run_publishes_a_summary_artifact(sluice_env: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    source = land(sluice_env, "dailycheckins.csv", GOOD + BAD_ROWS)
    report = run_ingest(source, dataset="dailycheckins", mode="soft")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-dailycheckins"]))
        )
    mine = [a for a in artifacts if str(a.flow_run_id) == report.flow_run_id]
    assert len(mine) == 1
    assert "rows quarantined | 3" in mine[0].data and "| 6 | hours |" in mine[0].data


def test_a_long_read_tells_how_far_it_has_got_after_each_chunk(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sluice ingest`` of a big file was silent until its last line (1M rows: ~5 s, 10M: ~25 s). The pass now
    tells a listener (the command's terminal) the rows read after each chunk; the real sample in 500-row chunks."""
    from sluice.ingest import progress
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "500")
    reload_settings()
    sample = shared_file("tm", "dailycheckins_sample.csv")
    records = len(sample.read_text(encoding="utf-8").splitlines()) - 1
    heard: list[tuple[str, int]] = []
    with progress(lambda source, rows: heard.append((source, rows))):
        report = run_ingest(str(sample))
    assert report.status == "success" and report.rows_read == records == 2034, report.error
    assert heard == [(str(sample), rows) for rows in (500, 1000, 1500, 2000, 2034)]

    def broken(_source: str, _rows: int) -> None:
        raise RuntimeError("a display that fails")

    with progress(broken):  # a failing display never fails the load
        assert run_ingest(str(sample), force=True).status == "success"
    heard.clear()
    assert run_ingest(str(sample), force=True).status == "success" and heard == []  # outside: nobody told


@pytest.mark.parametrize("change", ["truncated", "appended to"])
def test_a_file_that_changes_while_it_is_read_loads_nothing(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The file is hashed, then read again by the load. Truncated in between, it loaded half its rows under the
    SHA-256 of the whole file, so the whole file, landed again, was skipped as already loaded: the other half was
    lost. Appended to, it loaded rows its SHA-256 did not cover, and loaded them again with the grown file. Now
    the load checks, before it commits, that the file is still the one it hashed."""
    from sluice.ingest import progress
    from sluice.settings import reload_settings

    monkeypatch.setenv("SLUICE_CHUNK_ROWS", "500")
    reload_settings()
    text = shared_file("tm", "dailycheckins_sample.csv").read_text(encoding="utf-8")
    source = Path(land(sluice_env / "landing" / "changing", "dailycheckins.csv", text))
    whole = source.read_bytes()

    def changed(_source: str, _rows: int) -> None:  # after the first chunk: hashed, and being read
        if source.read_bytes() == whole:
            with source.open("r+b") as handle:
                if change == "truncated":
                    handle.truncate(len(whole) // 2)
                else:
                    handle.seek(0, 2)
                    handle.write(b"late,2019-11-26 14:47:36 UTC,1,p\n")

    with progress(changed):
        report = run_ingest(str(source))
    assert (report.status, report.state) == ("failed", "load"), report.error
    assert report.error.startswith(f"{source}: the file changed while it was read ({len(whole):,} bytes when")
    assert "Nothing was loaded; ingest it again once it is complete" in report.error
    assert rows(f"SELECT count(*) FROM sluice.file_loads WHERE source = '{source}'") == [(0,)]

    source.write_bytes(whole)  # complete again: it loads whole, and once
    again = run_ingest(str(source))
    assert (again.status, again.rows_loaded) == ("success", 2034), again.error
