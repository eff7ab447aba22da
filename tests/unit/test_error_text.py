"""Reasons that must fit an alert and a ledger item: cut in the middle, saying how much; values and names quoted
short."""

from __future__ import annotations

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
