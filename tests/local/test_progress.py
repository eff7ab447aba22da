"""Long commands show how far they have got on a terminal (the stage, and rows so far), as ``sluice ingest`` does;
piped, and with ``--json``, they print exactly what they printed before.

Each command runs as a user types it: ``python -m sluice`` (the console script's thin client, served by the home's
warm runner) with its stdin, stdout and stderr on a pseudo-terminal (``pty``), in a fresh home with its real
Prefect server and embedded PostgreSQL, on the real data in ``../shared/data``. Before, ``totesys`` showed a spinner
that said "one cycle..." throughout, ``totesys seed-source``, ``analytics`` and ``customers`` nothing at all, and
``backfill`` a bar that stayed at 0 while a file loaded.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import shared_file
from tests.local.test_services import _env
from tests.local.test_warm import home  # noqa: F401 (the module's fixture: a fresh home, its services up)

pytestmark = pytest.mark.slow

#: Cursor moves, colours and erasures: what is left is the text a user reads.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def on_a_terminal(
    home: Path,  # noqa: F811 (the fixture)
    *args: str,
    stdout_piped: bool = False,
    timeout: float = 300,
) -> tuple[int, list[str], str]:
    """Run ``sluice ARGS`` with a pseudo-terminal as its terminal (200 columns); returns its exit code, the distinct
    lines the terminal showed (each redraw of the status line is one), and stdout when ``stdout_piped``."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", *args],
        env={**_env(home), "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"},  # xdist sets 80 x 24
        cwd=home,
        stdin=child,
        stdout=subprocess.PIPE if stdout_piped else child,
        stderr=child,
    )
    os.close(child)
    shown = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: every holder of the terminal's other side has closed it
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    text = CONTROL.sub("", shown.decode(errors="replace"))
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    return code, list(dict.fromkeys(lines)), out


def piped(home: Path, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811 (the fixture)
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        env=_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def told(lines: list[str], command: str) -> list[str]:
    """The status lines of ``command`` (``<spinner> command: <what the run told>...``) without the spinner, each
    once (a line stays up for several of the spinner's frames), in the order they first showed."""
    pattern = rf"^\S {re.escape(command)}\b.*\.\.\.$"
    return list(dict.fromkeys(line.split(" ", 1)[1] for line in lines if re.match(pattern, line)))


def clean(text: str) -> None:
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]


@pytest.fixture(scope="module")
def seeded(home: Path) -> list[str]:  # noqa: F811
    """The Totesys source seeded from the real export, on a terminal: what the terminal showed."""
    code, lines, _ = on_a_terminal(home, "totesys", "seed-source", "--from", str(shared_file("totesys")))
    assert code == 0, lines
    return lines


@pytest.fixture(scope="module")
def landed(home: Path) -> list[str]:  # noqa: F811
    """The real Data2bots and Sertis files backfilled on a terminal: what the terminal showed."""
    landing = home / "landed"
    for name in ("orders", "reviews", "shipment_deliveries"):
        (landing / "data2bots" / name).mkdir(parents=True)
        shutil.copy(shared_file("data2bots", f"{name}.csv"), landing / "data2bots" / name)
    (landing / "sertis").mkdir()
    shutil.copy(shared_file("sertis", "transaction_sample.csv"), landing / "sertis")
    code, lines, _ = on_a_terminal(home, "backfill", str(landing))
    assert code == 0, lines
    assert "4 files: 4 loaded, 0 skipped, 0 failed; rows: 27,536 read, 27,536 loaded, 0 quarantined" in lines
    return lines


def test_seed_source_from_a_folder_tells_each_file_read_and_table_copied(
    home: Path,  # noqa: F811 (the fixture)
    seeded: list[str],
) -> None:
    source = str(shared_file("totesys"))
    shown = told(seeded, "seed-source")
    assert f"seed-source: reading {source}..." in shown
    assert "seed-source: read sales_order.csv..." in shown
    assert "seed-source: copy sales_order: 9,845 rows..." in shown
    assert "seed-source: copy payment: 13,959 rows..." in shown
    assert any(line.startswith("seeded ") and "42,386 rows in 11 tables" in line for line in seeded), seeded
    clean("\n".join(seeded))

    result = piped(home, "totesys", "seed-source", "--from", source)  # piped: as before, no status line
    assert result.returncode == 0 and "seeded " in result.stdout
    assert "copy " not in result.stdout + result.stderr and "read " not in result.stdout + result.stderr


def test_a_totesys_cycle_tells_its_stage_and_rows(home: Path, seeded: list[str]) -> None:  # noqa: F811
    code, lines, _ = on_a_terminal(home, "totesys")
    assert code == 0, lines
    shown = told(lines, "totesys")
    for stage in (
        "totesys: one cycle...",
        "totesys: extract sales_order...",
        "totesys: extract sales_order: 9,845 rows...",
        "totesys: transform: reading the lookups...",
        "totesys: transform transaction: 13,959 of 13,959 rows...",
        "totesys: write fact_sales_order (Parquet)...",
        "totesys: validate...",
        "totesys: load dim_staff: 20 of 20 rows...",
        "totesys: load fact_payment: 13,959 of 13,959 rows...",
        "totesys: load: the watermarks...",
    ):
        assert stage in shown, (stage, shown)
    order = [shown.index(s) for s in ("totesys: extract...", "totesys: transform...", "totesys: load...")]
    assert order == sorted(order), shown  # in the order they happen
    assert any("totesys cycle: success" in line for line in lines), lines
    clean("\n".join(lines))

    # piped: not one status line, the same text (the cycle is idle: nothing changed since)
    result = piped(home, "totesys")
    assert result.returncode == 0, result.stderr
    assert "totesys:" in result.stdout and "no new data" in result.stdout
    assert "extract" not in result.stdout + result.stderr and "..." not in result.stdout + result.stderr


def test_backfill_shows_the_rows_read_of_the_file_loading_beside_its_bar(landed: list[str]) -> None:
    bars = [line for line in landed if line.startswith("backfill ")]
    assert any(re.search(r"\d/4 .*orders\.csv: 10,000 rows read$", line) for line in bars), bars
    assert any(re.search(r"transaction_sample\.csv: 300 rows read$", line) for line in bars), bars
    clean("\n".join(landed))


def test_analytics_tells_its_stage_and_rows(home: Path, landed: list[str]) -> None:  # noqa: F811
    code, lines, _ = on_a_terminal(home, "analytics", "--force")
    assert code == 0, lines
    shown = told(lines, "analytics")
    for stage in (
        "analytics: extract...",
        "analytics: extract staging.orders...",
        "analytics: extract staging.shipment_deliveries...",
        "analytics: extract: the reference tables (27,236 staging rows read)...",
        "analytics: transform: the analytics for 2022-09-05...",
        "analytics: validate...",
        "analytics: load...",
        "analytics: export...",
    ):
        assert stage in shown, (stage, shown)
    assert any(line.startswith("exported agg_shipments: ") for line in lines), lines
    clean("\n".join(lines))

    # --json with stderr on the terminal: stdout is the one document, and the terminal shows no status line
    code, lines, out = on_a_terminal(home, "analytics", "--force", "--json", stdout_piped=True)
    assert code == 0 and out.startswith("{") and out.count("\n") == 1, (out, lines)
    assert told(lines, "analytics") == [], lines

    result = piped(home, "analytics", "--force")  # piped: as before, no status line
    assert result.returncode == 0, result.stderr
    assert "exported agg_shipments: " in result.stdout
    assert "extract" not in result.stdout + result.stderr and "..." not in result.stdout + result.stderr


def test_customers_tells_its_stage_and_rows(home: Path, landed: list[str]) -> None:  # noqa: F811
    code, lines, _ = on_a_terminal(home, "customers")
    assert code == 0, lines
    shown = told(lines, "customers")
    for stage in (
        "customers: extract...",
        "customers: extract silver: sorting the transactions by customer...",
        "customers: extract silver: 300 lines read...",
        "customers: transform: 300 of 300 rows...",
        "customers: validate...",
        "customers: load...",
    ):
        assert stage in shown, (stage, shown)
    assert "sertis.customers: 73 customers from 300 transaction lines in silver" in lines
    clean("\n".join(lines))

    code, lines, out = on_a_terminal(home, "customers", "--json", stdout_piped=True)
    assert code == 0 and out.startswith("{") and out.count("\n") == 1, (out, lines)
    assert told(lines, "customers") == [], lines

    result = piped(home, "customers")  # piped: as before, no status line
    assert result.returncode == 0, result.stderr
    assert "73 customers" in result.stdout
    assert "extract" not in result.stdout + result.stderr and "..." not in result.stdout + result.stderr


def test_the_first_command_in_a_new_home_says_it_starts_the_home_services(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The first command in a new home starts its Prefect server and its PostgreSQL (~20 s on 2 cores) and says so.
    ``sluice ingest``, the command a new user types first, showed "ingest x.csv..." and nothing else meanwhile: it
    started them before its status line existed."""
    from sluice import services

    fresh = tmp_path_factory.mktemp("fresh")
    source = str(shared_file("tm", "dailycheckins_sample.csv"))
    try:
        code, lines, _ = on_a_terminal(fresh, "ingest", source)
        assert code == 0, lines
        shown = [line.split(" (once")[0] for line in told(lines, "ingest dailycheckins_sample.csv")]
        assert shown[:4] == [
            "ingest dailycheckins_sample.csv...",
            "ingest dailycheckins_sample.csv: starting the Prefect server",
            "ingest dailycheckins_sample.csv: starting the embedded PostgreSQL",
            "ingest dailycheckins_sample.csv: extract...",
        ], lines
        assert any(line.startswith("success dailycheckins ← ") for line in lines), lines
        clean("\n".join(lines))

        code, lines, _ = on_a_terminal(fresh, "customers")  # running now: not said again
        assert code == 0, lines
        assert "customers: extract..." in told(lines, "customers"), lines
        assert not any("starting the" in line for line in lines), lines
    finally:
        services.stop(fresh, fresh / "pg")


def test_ingest_tells_its_state_and_the_rows_read(home: Path) -> None:  # noqa: F811
    """``sluice ingest`` shows its run's state and rows read like the other commands (it had a status of its own
    that showed only the rows, and said "1 rows")."""
    source = str(shared_file("tm", "dailycheckins_sample.csv"))
    code, lines, _ = on_a_terminal(home, "ingest", source, "--force")
    assert code == 0, lines
    shown = told(lines, "ingest dailycheckins_sample.csv")
    assert shown[0] == "ingest dailycheckins_sample.csv...", shown
    assert "ingest dailycheckins_sample.csv: extract..." in shown, shown
    assert shown[-1] == "ingest dailycheckins_sample.csv: 2,034 rows read...", shown
    assert any(line.startswith("success dailycheckins ← ") for line in lines), lines
    clean("\n".join(lines))

    result = piped(home, "ingest", source)  # piped: the result line only
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("skipped dailycheckins ← ") and result.stderr == "", result


def test_the_ledger_of_a_home_with_no_runs_says_so_on_a_terminal(tmp_path: Path) -> None:
    """Was an empty table (a header and nothing under it); piped, it stays the header line, for tools."""
    from sluice import services

    new = tmp_path / "new-home"
    new.mkdir()
    try:
        code, lines, _ = on_a_terminal(new, "ledger")
        piped_out = piped(new, "ledger")
    finally:
        services.stop(new, new / "pg")
    assert code == 0 and lines == [
        "no runs yet: `sluice ingest FILE --dataset NAME` or `sluice backfill FOLDER` makes them"
    ], lines
    assert piped_out.returncode == 0 and piped_out.stdout.splitlines() == [
        "started\trun\tdataset\tstatus\tstate\tread\tloaded\tquarantined\terror\tsource"
    ], piped_out.stdout
