"""What a new user's machine does to Sluice: two first commands at once, a home that cannot be written, a home
created by root and used by another user, a full disk.

As ``test_services``: ``sluice`` in subprocesses with a fresh ``SLUICE_HOME`` and no ``PREFECT_API_URL``; each test
stops what it started and checks that no process is left behind. An error the user can fix is one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import services
from tests.local.test_services import _env, home, processes_of, sluice  # noqa: F401 (home: a fixture)

pytestmark = pytest.mark.slow


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, which must be exactly one ``error:`` (or ``error at <state>:``) line, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("error: ", "error at ")), result.stderr[-3000:]
    return lines[0]


def test_two_demos_at_once_in_a_fresh_home_both_succeed(home: Path) -> None:  # noqa: F811 (the fixture)
    """Two `./run demo` at once from one fresh clone: the second died with a traceback (both created the Totesys
    source database; both seeded it). Now one waits for the other, says so, and finds the files loaded."""
    demos = [
        subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", "demo", "--rows", "60"],
            env=_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [demo.communicate(timeout=900) for demo in demos]
    finally:
        for demo in demos:
            demo.kill()
    for demo, (out, errors) in zip(demos, outputs, strict=True):
        assert demo.returncode == 0, out[-2000:] + errors[-3000:]
        assert "Traceback" not in out + errors and "ERROR" not in out + errors, errors[-3000:]
    waited = [out for out, _ in outputs if "another `sluice demo` is running" in out]
    assert len(waited) == 1, [out[:500] for out, _ in outputs]
    assert "skipped, this exact file was loaded before" in waited[0]  # nothing loaded twice

    stopped = sluice(home, "services", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert processes_of(home) == []


@pytest.mark.parametrize(
    "args",
    [
        ("ingest", "{file}", "--dataset", "dailycheckins"),
        ("ingest", "{file}", "--dataset", "dailycheckins", "--json"),
        ("ledger",),
        ("db", "url"),
        ("demo",),
        ("services", "start"),
    ],
    ids=lambda a: " ".join(a).replace("{file}", "FILE"),
)
def test_a_home_that_cannot_be_created_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    """SLUICE_HOME under a regular file (as root, the one path no permission lets us create): every command
    printed a traceback (NotADirectoryError from a mkdir). Now one line naming the path and what to do."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    landed = tmp_path / "checkins.csv"
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 10:00:00 UTC,4,b\n", encoding="utf-8")
    home = blocker / "home"  # noqa: F811 (not the fixture: a path that cannot exist)

    result = sluice(home, *(a.replace("{file}", str(landed)) for a in args))

    assert result.returncode == 1
    line = one_error_line(result)
    assert str(blocker) in line and "Not a directory" in line and "set SLUICE_HOME" in line, line
    if "--json" in args:
        assert json.loads(result.stdout)["error"] == line.removeprefix("error: ")
    assert processes_of(home) == []


def _as_another_user() -> tuple[list[str], str]:
    """A command prefix that runs Python as ``nobody`` (with this checkout and its packages), and that Python;
    skips unless this is root with ``runuser`` and an interpreter of this version that ``nobody`` may run."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another user")
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    checkout = str(Path(__file__).resolve().parents[2])
    for python in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        prefix = ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={checkout}:{packages}", "HOME=/tmp"]
        probe = subprocess.run(
            [*prefix, python, "-c", "import sluice.cli"], capture_output=True, timeout=120, check=False
        )
        if probe.returncode == 0:
            return prefix, python
    pytest.skip("no Python of this version that user nobody may run")


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """A fresh home in a folder every user may enter (the session's folder is root's own), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="sluice-tests-other-user-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder / "home"
    finally:
        services.stop(folder / "home", folder / "home" / "pg")
        shutil.rmtree(folder, ignore_errors=True)


def test_a_home_created_by_root_and_used_by_another_user_is_one_line(shared_home: Path) -> None:
    """Another user on a home root created (its PostgreSQL data folder belongs to pgserver's user, 0700): `ledger`
    and `db url` printed pgserver's exit-handler traceback after the error; the ingest a traceback."""
    prefix, python = _as_another_user()
    home = shared_home  # noqa: F811 (not the fixture)
    created = sluice(home, "ledger")  # as root: the home, its Prefect folder and the PostgreSQL data folder
    assert created.returncode == 0, created.stderr
    assert sluice(home, "services", "stop").returncode == 0
    landed = home.parent / f"{home.name}-checkins.csv"
    landed.write_text("user,timestamp,hours,project\nned,2019-09-26 10:00:00 UTC,4,b\n", encoding="utf-8")
    landed.chmod(0o644)

    for args in (("ledger",), ("db", "url"), ("ingest", str(landed), "--dataset", "dailycheckins")):
        env = {k: v for k, v in _env(home).items() if k in ("SLUICE_HOME", "PATH", "LANG")}
        result = subprocess.run(
            [*prefix, *(f"{k}={v}" for k, v in env.items()), python, "-m", "sluice.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 1, result.stdout
        line = one_error_line(result)
        assert f"{home.resolve()}/" in line and "Permission denied" in line and "set SLUICE_HOME" in line, (
            line
        )
    assert processes_of(home) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted after; skips where mounting is not allowed (not root, a container without it)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the file that does it (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def _rows(home: Path, ingestion_ids: list[str]) -> int:  # noqa: F811 (not the fixture)
    import sqlalchemy as sa

    pg = services.running_postgres(home / "pg")
    assert pg is not None
    engine = sa.create_engine(pg.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM tm.daily_checkins WHERE _ingestion_id::text = ANY(:ids)")
        return int(conn.execute(query, {"ids": ingestion_ids}).scalar_one())


@pytest.mark.parametrize("full", ["scratch", "quarantine"])
def test_a_full_disk_is_one_line_naming_the_path_and_a_rerun_loads_the_file_once(
    home: Path,  # noqa: F811 (the fixture)
    small_disk: Path,
    full: str,
) -> None:
    """The run's scratch folder (SLUICE_HOME/work: quarantined rows, spooled chunks) or the quarantine zone full:
    the error was "[Errno 28] No space left on device" with no path, and a full quarantine zone kept a ``.part``
    file. Now one line naming the path; the ledger says so; nothing loaded; the landed file untouched; once there
    is room the same command loads it once."""
    import hashlib

    landed = home.parent / f"{home.name}-checkins.csv"
    with landed.open("w", encoding="utf-8") as f:
        f.write("user,timestamp,hours,project\n")  # every 50th row bad: its rows go to the quarantine
        f.writelines(
            f"u{j},2019-03-{1 + j % 28:02d} 00:00:00 UTC,{99 if j % 50 == 0 else j % 9},p\n"
            for j in range(60_000)
        )
    digest = hashlib.sha256(landed.read_bytes()).hexdigest()
    env = {**_env(home), "SLUICE_CHUNK_ROWS": "20000", "SLUICE_WARM": "0"}
    if full == "scratch":
        (home / "work").symlink_to(small_disk)
    else:
        env["SLUICE_QUARANTINE_URI"] = str(small_disk / "quarantine")
    assert (
        sluice(home, "db", "url").returncode == 0
    )  # the warehouse started first: it is not on the small disk
    filler = _fill(small_disk)

    def ingest(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sluice.cli", "ingest", str(landed), "--dataset", "dailycheckins", *extra],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    failed = ingest()
    assert failed.returncode == 1, failed.stdout
    line = one_error_line(failed)
    assert f"no space left on device writing {small_disk}" in line, line
    ledger = json.loads(sluice(home, "ledger", "--json").stdout)
    assert ledger[0]["status"] == "failed" and "no space left on device writing" in ledger[0]["error"], (
        ledger[0]
    )
    assert _rows(home, [ledger[0]["run_id"]]) == 0
    assert list(small_disk.rglob("*.part")) == []
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == digest

    filler.unlink()
    loaded = ingest("--json")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    doc = json.loads(loaded.stdout)
    assert (doc["status"], doc["rows_loaded"], doc["rows_quarantined"]) == ("success", 58_800, 1_200), doc
    assert _rows(home, [doc["run_id"], ledger[0]["run_id"]]) == 58_800
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == digest
    assert sluice(home, "services", "stop").returncode == 0
    assert processes_of(home) == []
