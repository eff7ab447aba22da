"""Reasons that must fit an alert and a ledger item: cut in the middle, saying how much; values and names quoted
short."""

from __future__ import annotations

from pathlib import Path

from sluice.errors import MAX_ERROR_CHARS, clipped, listed, shown


def test_clipped_keeps_start_and_end_and_says_how_much_was_cut() -> None:
    assert clipped("short") == "short"
    text = "file.csv: 1 rows failed: " + "x" * 100_000 + "; all failures in s3://q/file.rows.csv"
    cut = clipped(text)
    assert len(cut) <= MAX_ERROR_CHARS
    assert cut.startswith("file.csv: 1 rows failed: xxx")
    assert cut.endswith("; all failures in s3://q/file.rows.csv")
    kept = len(cut) - len(cut[cut.index(" … [") : cut.index("] … ") + 4])
    assert f"[{len(text) - kept:,} characters cut]" in cut


def test_shown_and_listed() -> None:
    assert shown("-3") == "'-3'"
    long = shown("y" * 5000)
    assert long.startswith("'yyy") and long.endswith("… (5,000 characters)") and len(long) < 150
    assert listed(["a", "b"]) == "a, b"
    assert listed([f"c{i}" for i in range(25)]) == ", ".join(f"c{i}" for i in range(20)) + " … (5 more)"


def test_sns_subjects_are_one_ascii_line_of_100_characters_at_most() -> None:
    from sluice.adapters.notify_sns import sns_subject

    assert sns_subject("[sluice] FAILED dailycheckins at extract: café été.csv: file\nnot found") == (
        "[sluice] FAILED dailycheckins at extract: cafe ete.csv: file not found"
    )
    assert sns_subject("[sluice] FAILED x: 26 сентября") == "[sluice] FAILED x: 26 ????????"
    assert len(sns_subject("é" * 300)) == 100


def test_an_embedded_postgresql_that_cannot_start_says_its_fatal_line(tmp_path: Path) -> None:
    """Its data folder's disk full (log as PostgreSQL 16 wrote it here): the reason was the log's last line, "database
    system is shut down", which says nothing; the FATAL line of the last attempt says what to fix."""
    from sluice.adapters.warehouse import _start_failure

    attempt = (
        "2026-11-25 01:17:56.012 UTC [{pid}] LOG:  starting PostgreSQL 16.2 on x86_64-pc-linux-gnu\n"
        "2026-11-25 01:17:56.019 UTC [{pid}] LOG:  database system was not properly shut down; recovery in progress\n"
        '2026-11-25 01:17:56.083 UTC [{pid}] FATAL:  could not write to file "pg_wal/xlogtemp.{pid}": {why}\n'
        "2026-11-25 01:17:56.085 UTC [{pid}] LOG:  shutting down due to startup process failure\n"
        "2026-11-25 01:17:56.092 UTC [{pid}] LOG:  database system is shut down\n"
    )
    (tmp_path / "log").write_text(
        attempt.format(pid=1, why="an older attempt") + attempt.format(pid=2, why="No space left on device"),
        encoding="utf-8",
    )
    reason = _start_failure(tmp_path)
    assert 'FATAL:  could not write to file "pg_wal/xlogtemp.2": No space left on device' in reason, reason
    assert f"(log: {tmp_path / 'log'})" in reason

    (tmp_path / "log").write_text("2026-11-25 LOG:  something else\n", encoding="utf-8")
    assert "LOG:  something else" in _start_failure(tmp_path)  # no FATAL line: the last line, as before


def test_a_rows_line_reads_back_as_the_counts_it_says() -> None:
    """A deployment run's rows reach a backfill only as its state's message (``rows_line``): read back whole."""
    from sluice.errors import rows_line, rows_of

    for counts in [
        (1_036, 1_034, "tm.daily_checkins", 2),
        (0, 0, None, 0),
        (12_345_678, 1, "a.b", 12_345_677),
    ]:
        read, loaded, table, quarantined = counts
        assert rows_of(rows_line(read, loaded, table, quarantined)) == {
            "rows_read": read,
            "rows_loaded": loaded,
            "table": table,
            "rows_quarantined": quarantined,
        }
    for other in [
        None,
        "",
        "no new data since the watermarks",
        "1 read, 1 loaded into x, 0 quarantined; more",
    ]:
        assert rows_of(other) is None
