"""The ``sluice`` CLI in-process (typer's runner) on the real warehouse and Prefect harness."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app
from tests.conftest import drop_schemas, reset_totesys

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = (
    "user,timestamp,hours,project\nned,26 сентября 2019 00:00,4.0,bizdev\njaime,09/27/2019 12:00 AM,1.5,p\n"
)
JSON_KEYS = {
    "run_id",
    "dataset",
    "source",
    "status",
    "state",
    "rows_read",
    "rows_loaded",
    "rows_quarantined",
    "quarantine_uri",
    "table",
    "error",
}


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ingest_json_exit_codes(sluice_env: Path) -> None:
    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(GOOD, encoding="utf-8")

    code, out, _ = invoke("ingest", str(source), "--dataset", "dailycheckins", "--json")
    first = json.loads(out)
    assert code == 0 and set(first) >= JSON_KEYS
    assert (first["status"], first["state"], first["rows_loaded"], first["table"]) == (
        "success",
        "load",
        2,
        "tm.daily_checkins",
    )

    code, out, _ = invoke("ingest", str(source), "--dataset", "dailycheckins", "--json")
    assert code == 0 and json.loads(out)["status"] == "skipped"

    code, out, err = invoke("ingest", str(sluice_env / "nope.csv"), "--dataset", "dailycheckins", "--json")
    failed = json.loads(out)
    assert code == 1 and failed["status"] == "failed" and "file not found" in failed["error"]
    assert "Traceback" not in out + err

    code, out, _ = invoke("ledger", "--json")
    runs = json.loads(out)
    assert code == 0 and [r["status"] for r in runs] == ["failed", "skipped", "success"]
    assert [s["state"] for s in runs[2]["states"]] == ["extract", "transform", "validate", "load"]

    # off a terminal (piped): a header and one tab-separated line per run, whole run ids and errors, no box drawing
    code, out, _ = invoke("ledger")
    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and lines[0][:2] == ["started", "run"] and len(lines) == 4
    assert all(len(line) == 10 for line in lines)
    assert [line[9] for line in lines] == ["source", *(r["source"] for r in runs)]  # which file each run was
    assert [(line[1], line[3]) for line in lines[1:]] == [(r["run_id"], r["status"]) for r in runs]
    assert lines[1][8] == " ".join(runs[0]["error"].split()) and "nope.csv" in lines[1][8]


def test_a_skipped_ingest_says_why_and_how_to_load_it_again(sluice_env: Path) -> None:
    """README "Using it": exit 0 on a skip. The second ingest of a file says it is the same content and how to reload
    it, in the line and in the JSON (a bare "skipped ... 0 read, 0 loaded" left a new user guessing)."""
    source = sluice_env / "landing" / "dailycheckins-again.csv"
    source.parent.mkdir(parents=True)
    source.write_text(GOOD, encoding="utf-8")
    assert invoke("ingest", str(source), "--dataset", "dailycheckins")[0] == 0

    code, out, err = invoke("ingest", str(source), "--dataset", "dailycheckins")
    assert code == 0 and out.startswith("skipped dailycheckins"), out + err
    assert "already loaded" in out and "--force reloads it" in out, out
    code, out, _ = invoke("ingest", str(source), "--dataset", "dailycheckins", "--json")
    skipped = json.loads(out)
    assert (code, skipped["status"]) == (0, "skipped") and "--force reloads it" in skipped["error"]
    code, out, _ = invoke("ingest", str(source), "--dataset", "dailycheckins", "--force", "--json")
    assert (code, json.loads(out)["status"], json.loads(out)["rows_loaded"]) == (0, "success", 2)


def test_failed_run_prints_one_readable_line(sluice_env: Path) -> None:
    """A run that read nothing prints no row counts: ``failed - ← …missing.csv: 0 read, 0 loaded into -, 0
    quarantined`` above the error said nothing the error did not, and ``-`` stood for a dataset."""
    code, out, err = invoke("ingest", str(sluice_env / "missing.csv"), "--dataset", "dailycheckins")
    assert code == 1
    assert "missing.csv: file not found" in err and "Traceback" not in out + err
    assert out.strip() == f"failed dailycheckins ← {sluice_env / 'missing.csv'}", out
    unclaimed = sluice_env / "landing" / "nobody-claims-this.csv"
    unclaimed.parent.mkdir(parents=True)
    unclaimed.write_text("a,b\n1,2\n", encoding="utf-8")
    # A file you name that no dataset claims loads nothing: an error (it was "skipped", exit 0, which a script took
    # for a success), said as `backfill FILE` says it, before any run.
    code, out, err = invoke("ingest", str(unclaimed))
    assert (code, out) == (1, ""), out + err
    assert err == f"error: {unclaimed}: no dataset claims this file's name; --dataset NAME loads it as NAME\n"
    assert invoke("backfill", str(unclaimed))[2] == err


def test_an_already_loaded_file_is_said_alike_by_ingest_the_ledger_and_backfill(sluice_env: Path) -> None:
    """Three wordings of one skip: ``sluice ingest`` said "already loaded: the same content was loaded before …",
    its own ledger entry "already loaded (sha256 …); --force (…) reloads it", and backfill "already loaded (sha256
    …, run …); sluice ingest --force reloads it". One now, naming the run that loaded it."""
    import hashlib

    source = sluice_env / "landing" / "dailycheckins-said-alike.csv"
    source.parent.mkdir(parents=True)
    source.write_text(GOOD, encoding="utf-8")
    first = json.loads(invoke("ingest", str(source), "--json")[1])
    again = json.loads(invoke("ingest", str(source), "--json")[1])
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    said = (
        f"already loaded by run {first['run_id']} (sha256 {sha[:12]}): nothing loads twice; "
        "sluice ingest --force reloads it (force=true for a deployment run)"
    )
    assert (first["status"], again["status"], again["error"]) == ("success", "skipped", said)
    ledger = json.loads(invoke("ledger", "--json", "--limit", "5")[1])
    assert [r["error"] for r in ledger if r["run_id"] == again["run_id"]] == [said]
    backfilled = json.loads(invoke("backfill", str(source), "--json")[1])
    assert [r["error"] for r in backfilled["results"]] == [said]


def test_a_mistyped_dataset_is_a_usage_error_that_runs_nothing(sluice_env: Path) -> None:
    """``--dataset dailycheckin`` was a failed run (exit 1), recorded in the ledger under a dataset that does not
    exist, while ``--mode strict`` was a usage error. Both commands now refuse it before anything runs, and say
    which name was meant."""
    source = sluice_env / "landing" / "dailycheckins.csv"
    source.parent.mkdir(parents=True)
    source.write_text(GOOD, encoding="utf-8")
    _, before, _ = invoke("ledger", "--json")
    for command in ("ingest", "backfill"):
        code, out, err = invoke(command, str(source), "--dataset", "dailycheckin")
        assert (code, out) == (2, ""), (command, out, err)
        assert err.startswith(
            "error: unknown dataset 'dailycheckin': did you mean 'dailycheckins'? (registered: "
        )
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, _, err = invoke("ingest", str(source), "--dataset", "zzz")
    assert code == 2 and "did you mean" not in err and "unknown dataset 'zzz' (registered: " in err, err
    _, after, _ = invoke("ledger", "--json")
    assert json.loads(after) == json.loads(before)  # no run, no ledger entry


def test_a_soft_load_says_which_rows_were_quarantined_and_why(sluice_env: Path) -> None:
    """``sluice ingest`` in soft mode named the quarantine file and no reason: the user had to open it to learn
    what was wrong (the demo and a hard failure say it). Now the first failed checks (row, column, check, value),
    then how many more rows the quarantine file holds."""
    source = sluice_env / "landing" / "dailycheckins-some-bad.csv"
    source.parent.mkdir(parents=True)
    bad = [
        "ann,2019-09-26 00:00:00 UTC,25,p",
        ",2019-09-26 00:00:00 UTC,1,p",
        "bo,whenever,2,p",
        "cy,2019-09-26 00:00:00 UTC,-1,p",
    ]
    source.write_text(GOOD + "\n".join(bad) + "\n", encoding="utf-8")

    code, out, err = invoke("ingest", str(source), "--dataset", "dailycheckins", "--mode", "soft")
    assert code == 0 and err == "", out + err
    lines = out.splitlines()
    assert lines[0] == (
        f"success dailycheckins ← {source}: 6 read, 2 loaded into tm.daily_checkins, 4 quarantined"
    ), out
    assert lines[1].startswith("  quarantine: ") and lines[1].endswith(".rows.csv")
    assert lines[2:] == [
        "  row 3, column hours: less_than_or_equal_to(24) (value '25')",
        "  row 4, column user: required (missing or unparseable) (value '')",
        "  row 5, column timestamp: required (missing or unparseable) (value 'whenever')",
        "  and 1 more row: all of them, with the reason for each, in the quarantine file",
    ], out


def test_a_warehouse_that_refuses_connections_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was five lines: SQLAlchemy's wrapper class, psycopg2's message and hint, a documentation link; and the
    report line read ``failed None ← …``."""
    import socket

    from sluice.settings import reload_settings

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SLUICE_DATABASE_URL", f"postgresql://sluice:pw@127.0.0.1:{port}/warehouse")
    reload_settings()
    landed = tmp_path / "dailycheckins.csv"
    landed.write_text(GOOD, encoding="utf-8")
    try:
        code, out, err = invoke("ingest", str(landed))
        assert code == 1
        assert out.startswith("failed ← "), out
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert (
            lines[0].startswith("error") and "cannot connect to the warehouse: connection to server at" in err
        )
        assert "Connection refused" in err and "sqlalche.me" not in err and "psycopg2" not in err

        code, out, _ = invoke("ingest", str(landed), "--json")
        assert code == 1
        assert json.loads(out)["error"].startswith("cannot connect to the warehouse: connection to server at")

        # a backfill's bulk check of what is loaded said it in six lines, a documentation link among them
        code, out, err = invoke("backfill", str(tmp_path), "--json")
        assert code == 1 and json.loads(out)["failed"] == 1
        [warning] = [line for line in err.splitlines() if "not checked in bulk" in line]
        assert warning.startswith(
            "warning: files already loaded not checked in bulk: cannot connect to the warehouse"
        )
        assert "sqlalche.me" not in err and "Background on this error" not in err, err
    finally:
        monkeypatch.delenv("SLUICE_DATABASE_URL")
        reload_settings()


@pytest.mark.parametrize("args", [("ingest",), ("ingest", "x.csv", "--mode", "medium"), ("nosuchcommand",)])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    code, _, _ = invoke(*args)
    assert code == 2


def test_db_url_hides_the_password(pg_url: str) -> None:
    code, out, _ = invoke("db", "url")
    assert code == 0 and out.strip().startswith("postgresql+psycopg2://")


@pytest.fixture
def demo_state_dropped(sluice_env: Path) -> Iterator[Path]:
    """The demo seeds the shared Totesys source and fills every pipeline's schemas: none of it is left after."""
    yield sluice_env
    reset_totesys()
    drop_schemas("staging", "analytics", "if_common", "sertis")


def test_demo_twice_loads_nothing_twice(demo_state_dropped: Path) -> None:
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine

    code, out, _ = invoke("demo", "--rows", "300")
    assert code == 0, out
    with get_engine().connect() as conn:
        first = conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one()
    code, out, _ = invoke("demo", "--rows", "300")
    assert code == 0, out
    with get_engine().connect() as conn:
        second = conn.execute(sa.text("SELECT count(*) FROM tm.daily_checkins")).scalar_one()
    assert 0 < first == second < 300  # a few generated rows are bad and quarantined
    assert "skipped" in out and "Traceback" not in out and "ERROR" not in out
    assert "Prefect UI, with the runs above (Runs page):  http://" in out


def test_totesys_on_an_external_warehouse_without_a_source_says_what_to_set(
    sluice_env: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on ECS with the stack's warehouse but no Totesys source: one readable line, not an import error."""
    from sluice.settings import reload_settings

    monkeypatch.delenv("SLUICE_TOTESYS_SOURCE_URL", raising=False)
    monkeypatch.delenv("SLUICE_TOTESYS_SOURCE_SECRET_ARN", raising=False)
    monkeypatch.setenv("SLUICE_DATABASE_URL", pg_url)
    reload_settings()
    try:
        code, out, err = invoke("totesys", "--json")
    finally:
        monkeypatch.undo()
        reload_settings()
    doc = json.loads(out)
    assert code == 1 and (doc["dataset"], doc["status"]) == ("totesys", "failed")
    assert "SLUICE_TOTESYS_SOURCE_URL is not set" in doc["error"]
    assert "Traceback" not in out + err and "pgserver" not in out + err


def test_no_warehouse_and_no_embedded_postgres_says_what_to_set(tmp_path: Path) -> None:
    """The image has no pgserver (Aurora only): without a configured warehouse a command names the settings."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "PREFECT_"))}
    env["SLUICE_HOME"] = str(tmp_path / "home")
    script = "import sys; sys.modules['pgserver'] = None\nfrom sluice.cli import main\nmain()"
    done = subprocess.run(
        [sys.executable, "-c", script, "db", "url"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no warehouse configured: set SLUICE_DATABASE_URL" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_ingest_of_a_relative_path_records_the_absolute_path_and_stays_exactly_once(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sluice ingest files/x.csv` recorded `files/x.csv` (ledger, registry, report): the same file named from
    another folder looked like another file. The registry's key is (dataset, content SHA-256), not the path:
    the file loaded by its relative path is still skipped when named by its absolute path, as a file loaded
    before this change (a relative source in its row) is."""
    import sqlalchemy as sa

    from sluice.adapters.warehouse import get_engine

    landed = sluice_env / "landing" / "files" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(GOOD, encoding="utf-8")
    monkeypatch.chdir(sluice_env / "landing")

    code, out, _ = invoke("ingest", "files/../files/dailycheckins.csv", "--json")
    report = json.loads(out)
    assert (code, report["status"], report["source"]) == (0, "success", str(landed))
    with get_engine().connect() as conn:
        registered = conn.execute(sa.text("SELECT source FROM sluice.file_loads")).scalars().all()
        recorded = set(conn.execute(sa.text("SELECT source FROM sluice.run_ledger")).scalars())
    assert (registered, recorded) == ([str(landed)], {str(landed)})

    with get_engine().begin() as conn:  # as a row written before the change: the relative path
        conn.execute(sa.text("UPDATE sluice.file_loads SET source = 'files/dailycheckins.csv'"))
    monkeypatch.chdir(sluice_env)
    code, out, _ = invoke("ingest", str(landed), "--json")
    assert (code, json.loads(out)["status"]) == (0, "skipped")
    code, out, _ = invoke("ingest", "landing/files/dailycheckins.csv", "--json")
    assert (code, json.loads(out)["status"], json.loads(out)["source"]) == (0, "skipped", str(landed))


NOT_POSTGRESQL = (
    "must be PostgreSQL: postgresql://user:password@host/db (or postgres://, postgresql+psycopg2://), "
    "not mysql://u:***@h/db"
)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["db", "url"], "SLUICE_DATABASE_URL"),
        (["ledger"], "SLUICE_DATABASE_URL"),
        (["ingest", "{landed}", "--json"], "SLUICE_DATABASE_URL"),
        (["backfill", "{folder}", "--json"], "SLUICE_DATABASE_URL"),
        (["totesys", "--json"], "SLUICE_DATABASE_URL"),
        (["api", "--port", "0"], "SLUICE_DATABASE_URL"),
        (["totesys", "--json", "--source-url", "mysql://u:s3cret@h/db"], None),
        (["totesys", "--json"], "SLUICE_TOTESYS_SOURCE_URL"),
    ],
)
def test_a_database_url_that_is_not_postgresql_is_one_line_naming_it_without_its_password(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], variable: str | None
) -> None:
    """`SLUICE_DATABASE_URL=mysql://…` printed "No module named 'MySQLdb'" (`sluice ledger`: a traceback; `db url`
    printed the URL and exit 0): now every command says what must be PostgreSQL, the schemes it takes, and the
    URL it was given with its password hidden."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(GOOD, encoding="utf-8")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_WARM": "0",
        "SLUICE_RETRIES": "0",
    }
    if variable:
        env[variable] = "mysql://u:s3cret@h/db"
    argv = [a.format(landed=landed, folder=landed.parent) for a in args]
    # its own process: the CLI's own exit path (a configuration error is printed by sluice.cli.main)
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", *argv],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "s3cret" not in said and "Traceback" not in said and "MySQLdb" not in said
    what = (
        "the Totesys source URL"
        if variable != "SLUICE_DATABASE_URL"
        else "SLUICE_DATABASE_URL (the warehouse)"
    )
    assert f"{what} {NOT_POSTGRESQL}" in said, said


def _sluice(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``sluice`` in its own process: the CLI's own exit path (``sluice.cli.main`` prints a configuration error)."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["db", "url"],
        ["ledger"],
        ["ingest", "{landed}", "--json"],
        ["backfill", "{folder}", "--json"],
        ["totesys", "--json"],
        ["api", "--port", "0"],
        ["analytics", "--json"],
        ["customers", "--json"],
    ],
)
def test_a_warehouse_url_with_another_postgresql_driver_is_refused_in_one_line(
    sluice_env: Path, args: list[str]
) -> None:
    """`SLUICE_DATABASE_URL=postgresql+asyncpg://…` was taken: `db url` printed it (exit 0), `ledger` was
    SQLAlchemy's "greenlet_spawn has not been called" traceback. The loads COPY through psycopg2: one line naming
    the driver, the forms taken and the URL without its password."""
    import os

    from prefect.settings import PREFECT_API_URL

    landed = sluice_env / "landing" / "dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(GOOD, encoding="utf-8")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_WARM": "0",
        "SLUICE_RETRIES": "0",
        "SLUICE_DATABASE_URL": "postgresql+asyncpg://u:s3cret@h/db",
    }
    done = _sluice([a.format(landed=landed, folder=landed.parent) for a in args], env)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "s3cret" not in said and "Traceback" not in said and "greenlet" not in said, said
    assert (
        "SLUICE_DATABASE_URL (the warehouse) names the driver asyncpg, but Sluice loads through psycopg2: write "
        "postgresql://user:password@host/db (or postgres://, postgresql+psycopg2://), "
        "not postgresql+asyncpg://u:***@h/db"
    ) in said, said


@pytest.mark.parametrize("driver", ["psycopg", "pg8000", "asyncpg"])
def test_a_warehouse_secret_with_another_postgresql_driver_is_refused(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    """The same rule for the URL in Secrets Manager (ECS): the secret is named, never the password."""
    import boto3

    from sluice.adapters.warehouse import database_url, secret_value
    from sluice.errors import ConfigurationError
    from sluice.settings import reload_settings

    arn = boto3.client("secretsmanager", endpoint_url=moto_endpoint).create_secret(
        Name=f"sluice/warehouse-{driver}",
        SecretString=json.dumps({"url": f"postgresql+{driver}://u:s3cret@aurora.example.com/warehouse"}),
    )["ARN"]
    monkeypatch.delenv("SLUICE_DATABASE_URL", raising=False)
    monkeypatch.setenv("SLUICE_DATABASE_SECRET_ARN", arn)
    secret_value.cache_clear()
    try:
        with pytest.raises(ConfigurationError) as raised:
            database_url(reload_settings())
    finally:
        monkeypatch.undo()
        reload_settings()
        secret_value.cache_clear()
    said = str(raised.value)
    assert said.startswith(
        f"the URL in secret {arn.rsplit(':', 1)[-1]} (the warehouse) names the driver {driver}, "
        "but Sluice loads through psycopg2"
    ), said
    assert "s3cret" not in said


def test_the_totesys_source_still_reads_any_postgresql_driver_through_psycopg2() -> None:
    """The refusal is the warehouse's: the Totesys source's engine puts psycopg2 in itself (its own test,
    tests/totesys/test_source_edges.py), and a warehouse URL naming psycopg2 is kept as given."""
    from sluice.adapters.warehouse import sqlalchemy_url

    given = "postgresql+asyncpg://u:pw@h/db"
    assert sqlalchemy_url(given, "the Totesys source URL", any_driver=True) == given
    assert sqlalchemy_url("postgresql+psycopg2://u:pw@h/db") == "postgresql+psycopg2://u:pw@h/db"
    assert sqlalchemy_url("postgres://u:pw@h/db") == "postgresql+psycopg2://u:pw@h/db"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ingest", "x.csv", "--modd", "soft"], "No such option: --modd"),
        (["ingest"], "Missing argument 'source'."),
        (["ledger", "--limt", "3"], "No such option: --limt (Possible options: --limit)"),
        (["ledger", "--limit", "many"], "Invalid value for '--limit'"),
        (["backfill"], "Missing argument 'prefix'."),
        (["backfill", "landing", "--concurrency", "x"], "Invalid value for '--concurrency'"),
        (["services", "status", "--verbose"], "No such option: --verbose"),
        (["analytics", "--forse"], "No such option: --forse (Possible options: --force"),
        (["customers", "--bogus"], "No such option: --bogus"),
        (["totesys", "--bogus"], "No such option: --bogus"),
    ],
)
def test_a_usage_error_under_json_carries_clicks_message(tmp_path: Path, args: list[str], says: str) -> None:
    """`--json` on a mistyped option, a missing argument or a value of the wrong type: the document said only
    "usage error (the message is on stderr)"; it carries click's message, still printed on stderr as before."""
    import os

    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home"), "SLUICE_WARM": "0"}
    done = _sluice([*args, "--json"], env)
    assert done.returncode == 2, done.stdout + done.stderr
    document = json.loads(done.stdout)  # the whole of stdout: one document
    assert document["status"] == "failed" and document["exit_code"] == 2
    assert says in document["error"], document
    assert says.split(":")[0] in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "home").exists()  # a usage error starts nothing


@pytest.mark.parametrize(
    "args",
    [
        ["ledger", "--limit", "-1"],  # was SQLAlchemy's DataError traceback (LIMIT must not be negative)
        ["customers", "--limit", "-1"],  # the same, after the whole run
        ["demo", "--rows", "0"],  # ran the whole demo on empty files, then exit 1
        ["api", "--port", "70000"],  # listened on another port than it said (70000 mod 65536)
        ["api", "--port", "-1"],  # "cannot listen on 127.0.0.1👎 Servname not supported"
        [
            "notify",
            "add-email",
            "x",
            "--to",
            "a@b.c",
            "--smtp-host",
            "h",
            "--smtp-port",
            "99999",
        ],  # was saved
        ["totesys", "seed-source", "--orders", "-1"],  # seeded an empty source
    ],
)
def test_a_number_out_of_its_range_is_a_usage_error(args: list[str]) -> None:
    code, out, err = invoke(*args)
    option = next(a for a in args if a.startswith("--") and a not in ("--to", "--smtp-host"))
    assert code == 2, out + err
    assert f"Invalid value for '{option}'" in err and "Traceback" not in out + err, err


def test_a_message_quoting_brackets_or_colons_is_printed_as_written(sluice_env: Path) -> None:
    """rich read the message as markup: a file named ``[red]…`` lost its brackets, and ``:-1:`` became 👎
    (`sluice api --port -1` said "cannot listen on 127.0.0.1👎 …")."""
    missing = sluice_env / "dailycheckins-[red]x:-1:.csv"
    code, out, err = invoke("ingest", str(missing), "--dataset", "dailycheckins")
    assert code == 1
    assert f"{missing}: file not found" in " ".join(err.split()), err
    assert str(missing) in out, out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # Prefect's "Invalid deployment name format" traceback; another flow's deployment got a file's parameters
        (
            ["backfill", ".", "--deployment", "nope"],
            "--deployment must be ingest-files/NAME or ingest-file/NAME",
        ),
        (["backfill", ".", "--deployment", "analytics/x"], "not 'analytics/x'"),
        # botocore's "Invalid bucket name" traceback; ingest skipped it ("no registered dataset claims this key")
        (["backfill", "s3://"], "'s3://' names no bucket: s3://BUCKET/KEY"),
        (["ingest", "s3:///dailycheckins.csv"], "names no bucket"),
        # pydantic's ValidationError traceback
        (
            ["notify", "add-sns", "My Alerts", "--topic-arn", "arn:aws:sns:us-east-1:123456789012:t"],
            "block name",
        ),
        # was saved; every alert then failed to send
        (
            ["notify", "add-email", "team", "--to", "ops", "--smtp-host", "h"],
            "--to 'ops' is not an email address",
        ),
        # said after reading the stack, or "You must specify a region" before it
        (["aws", "setup", "--pool-type", "fargate"], "--pool-type must be ecs:push or ecs, not 'fargate'"),
        # "missing address.csv, counterparty.csv, …" for a folder that is not there
        (["totesys", "seed-source", "--from", "no-such-folder"], "'no-such-folder' does not exist"),
    ],
)
def test_a_mistyped_argument_is_one_usage_line_before_anything_starts(args: list[str], says: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2, out + err
    assert says in " ".join(err.replace("│", " ").split()), err
    assert "Traceback" not in out + err


def test_ingest_of_a_folder_points_to_backfill(sluice_env: Path) -> None:
    """It was "skipped: no registered dataset claims this key" (exit 0), or with --dataset "file not found"."""
    folder = sluice_env / "landing"
    folder.mkdir()
    for extra in ([], ["--dataset", "dailycheckins"]):
        code, out, err = invoke("ingest", str(folder), *extra)
        assert code == 2, out + err
        assert f"{folder} is a folder: `sluice backfill {folder}` ingests every file under it" in err, err


def test_an_s3_prefix_that_cannot_be_listed_is_one_line(sluice_env: Path, moto_endpoint: str) -> None:
    """A bucket that does not exist, no AWS credentials: botocore's traceback (NoSuchBucket on ListObjectsV2,
    NoCredentialsError). The text line and the --json document say it, exit 1."""
    import os

    env = {**os.environ, "SLUICE_WARM": "0"}
    done = _sluice(["backfill", "s3://no-such-bucket-here/landing/", "--json"], env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        json.loads(done.stdout)["error"]
        == "s3://no-such-bucket-here/landing/: no such bucket 'no-such-bucket-here'"
    )

    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    bare.update(
        AWS_SHARED_CREDENTIALS_FILE=str(sluice_env / "none"),
        AWS_CONFIG_FILE=str(sluice_env / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=moto_endpoint,
    )
    done = _sluice(["backfill", "s3://any-bucket/landing/"], bare)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "s3://any-bucket/landing/: no AWS credentials to list it (AWS_PROFILE or AWS_ACCESS_KEY_ID" in (
        " ".join(done.stderr.split())
    ), done.stderr

    # one object, no credentials: the same line, at the extract, and the ledger says it; was "Unable to locate
    # credentials" after the extract's retries
    done = _sluice(
        ["ingest", "s3://any-bucket/landing/dailycheckins.csv", "--dataset", "dailycheckins", "--json"], bare
    )
    report = json.loads(done.stdout)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert report["error"].startswith(
        "s3://any-bucket/landing/dailycheckins.csv: no AWS credentials to read it (AWS_PROFILE or AWS_ACCESS_KEY_ID"
    ), report
    ledger = json.loads(_sluice(["ledger", "--json", "--limit", "1"], bare).stdout)
    extract = [s for s in ledger[0]["states"] if s["state"] == "extract"]
    assert [s["status"] for s in extract] == ["fail"] and extract[0]["error"] == report["error"], ledger


def test_run_sluice_from_another_folder_reads_the_callers_paths_in_the_checkouts_home(
    sluice_env: Path, tmp_path: Path
) -> None:
    """`/path/to/checkout/run sluice ingest data/x.csv` looked for `data/x.csv` in the checkout (./run cd's there):
    "file not found", and a failed run in the ledger. Paths are the caller's now; the home stays the checkout's
    (or SLUICE_HOME's, read from the checkout, as the README says), and `~` in SLUICE_HOME is the user's home."""
    import os
    import subprocess

    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).parents[2]
    caller = tmp_path / "elsewhere"
    (caller / "data").mkdir(parents=True)
    landed = caller / "data" / "dailycheckins.csv"
    landed.write_text(GOOD, encoding="utf-8")
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SLUICE_WARM": "0",
        "HOME": str(tmp_path),
        "SLUICE_HOME": "~/home",
    }
    try:
        done = subprocess.run(
            [str(root / "run"), "sluice", "ingest", "data/dailycheckins.csv", "--json"],
            cwd=caller, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:  # the embedded PostgreSQL it started in that home (it outlived the test until its folder went)
        subprocess.run(
            [str(root / "run"), "sluice", "services", "stop"],
            cwd=caller, env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["status"], report["source"]) == ("success", str(landed))
    assert (tmp_path / "home").is_dir() and not (root / "~").exists() and not (caller / "~").exists()


def test_a_file_uri_is_the_file_it_names(sluice_env: Path) -> None:
    """`file:///…/file%20uri%20dailycheckins.csv` (a file URI as URIs are written) was "file not found"; the
    unencoded form loaded but recorded `file://…` as its source: another file than the same one named by its path."""
    from urllib.parse import quote

    landed = sluice_env / "landing" / "with space" / "file uri dailycheckins.csv"
    landed.parent.mkdir(parents=True)
    landed.write_text(GOOD, encoding="utf-8")

    code, out, _ = invoke("ingest", f"file://{quote(str(landed))}", "--json")
    assert (code, json.loads(out)["status"], json.loads(out)["source"]) == (0, "success", str(landed)), out
    code, out, _ = invoke("ingest", f"file://{landed}", "--json")  # unencoded, as people write them too
    assert (code, json.loads(out)["status"], json.loads(out)["source"]) == (0, "skipped", str(landed)), out


def test_ledger_says_when_a_dynamodb_table_is_set_but_not_the_backend(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `. .sluice/deploy.env` (the stack's SLUICE_LEDGER_TABLE, not SLUICE_LEDGER), `sluice ledger` showed
    the local warehouse's runs, an empty table, without a word: it looked as if the stack had run nothing."""
    from sluice.settings import reload_settings

    code, _, err = invoke("ledger")
    assert (code, err) == (0, "")
    monkeypatch.setenv("SLUICE_LEDGER_TABLE", "sluice-run-ledger")
    reload_settings()
    code, _, err = invoke("ledger")
    assert code == 0
    assert err == (
        "warning: SLUICE_LEDGER_TABLE=sluice-run-ledger is set, but SLUICE_LEDGER is postgres: these are the "
        "warehouse's runs (SLUICE_LEDGER=dynamodb reads the table)\n"
    )
    monkeypatch.delenv("SLUICE_LEDGER_TABLE")
    reload_settings()  # not left to the next test: sluice_env's own reload runs before the variable goes
