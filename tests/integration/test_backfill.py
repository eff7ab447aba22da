"""``sluice backfill``: every file under a prefix, bounded pool, loaded files skipped, per-file results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app, backfill
from tests.conftest import shared_file
from tests.steps import steps

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_backfill_loads_new_files_skips_loaded_and_reports_each(sluice_env: Path) -> None:
    folder = sluice_env / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    for day in range(3):
        (folder / f"dailycheckins-{day}.csv").write_text(
            f"user,timestamp,hours,project\nu{day},2019-01-0{day + 1} 00:00:00 UTC,1,p\n", encoding="utf-8"
        )
    (folder / "dailycheckins-bad.csv").write_text("nope\n1\n", encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"])
    assert first.exit_code == 1  # one bad file
    body = json.loads(first.stdout)
    assert (body["files"], body["success"], body["failed"]) == (4, 3, 1)
    assert {Path(r["source"]).name: r["status"] for r in body["results"]}["dailycheckins-bad.csv"] == "failed"

    (folder / "dailycheckins-bad.csv").unlink()
    second = runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"])
    body = json.loads(second.stdout)
    assert second.exit_code == 0 and (body["files"], body["skipped"], body["success"]) == (3, 3, 0)


def test_loads_hold_a_slot_of_the_warehouse_concurrency_limit(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from sluice.cli.runner import run_ingest
    from sluice.settings import reload_settings

    def landed(name: str) -> str:
        path = sluice_env / "landing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user,timestamp,hours,project\nu,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8")
        return str(path)

    monkeypatch.setenv("SLUICE_WAREHOUSE_CONCURRENCY_LIMIT", "sluice-test-warehouse")
    monkeypatch.setenv("SLUICE_RETRIES", "2")
    monkeypatch.setenv("SLUICE_RETRY_DELAY_SECONDS", "5")
    reload_settings()
    missing = run_ingest(landed("dailycheckins-a.csv"), dataset="dailycheckins")
    assert (missing.status, missing.state) == (
        "failed",
        "load",
    )  # configured but not created: no silent bypass
    # Created where the runs look for it: `prefect gcl create` typed without PREFECT_API_URL goes to a temporary
    # server of its own (~/.prefect), not the home's, and the load said "create it" about a limit just created.
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    assert (
        f"the Prefect server at {api} has no such global concurrency limit: create it there "
        f"(`PREFECT_API_URL={api} prefect gcl create sluice-test-warehouse --limit 4`)"
    ) in (missing.error or ""), missing.error
    load = {s.name: s for s in steps(missing.flow_run_id, last="load")}["load"]
    assert (load.retries, load.run_count) == (2, 1)  # a setting to fix: not retried

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="sluice-test-warehouse", limit=1)
        )
        report = run_ingest(landed("dailycheckins-b.csv"), dataset="dailycheckins")
        limit = client.read_global_concurrency_limit_by_name("sluice-test-warehouse")
    assert (report.status, report.rows_loaded) == ("success", 1)
    assert limit.active_slots == 0  # taken for the load, given back after it


def test_skipped_files_are_recorded_in_bulk_without_flow_runs(sluice_env: Path) -> None:
    from prefect.client.orchestration import get_client

    folder = sluice_env / "landing" / "bulk"
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"dailycheckins-{i}.csv").write_text(
            f"user,timestamp,hours,project\nb{i},2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8"
        )
    runner = CliRunner()
    assert (
        runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"]).exit_code == 0
    )
    with get_client(sync_client=True) as client:
        runs_before = len(client.read_flow_runs(limit=200))
    again = runner.invoke(app, ["backfill", str(folder), "--dataset", "dailycheckins", "--json"])
    body = json.loads(again.stdout)
    assert again.exit_code == 0 and body["skipped"] == 5
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs(limit=200)) == runs_before  # no flow run for a skip
    ledger = json.loads(runner.invoke(app, ["ledger", "--json", "--limit", "50"]).stdout)
    skipped = [r for r in ledger if r["status"] == "skipped"]
    assert len(skipped) == 5 and {r["run_id"] for r in skipped} == {r["run_id"] for r in body["results"]}


def test_shards_hold_one_dataset_and_at_most_shard_size_files() -> None:
    from sluice.cli.fanout import shards

    files = [(f"a{i}", "orders") for i in range(5)] + [("b0", "reviews"), ("c0", "orders")]
    assert [len(s) for s in shards(files, 2)] == [2, 2, 1, 1, 1]
    assert all(len({name for _, name in s}) == 1 for s in shards(files, 10))


def test_ingest_files_runs_each_file_of_a_shard_as_its_own_run(sluice_env: Path) -> None:
    from flows.ingest_files import ingest_files
    from sluice.cli.fanout import _shard_results

    folder = sluice_env / "landing" / "shard"
    folder.mkdir(parents=True)
    sources = []
    for i in range(3):
        path = folder / f"dailycheckins-{i}.csv"
        path.write_text(f"user,timestamp,hours,project\ns{i},2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8")
        sources.append(str(path))
    sources.append(str(folder / "missing.csv"))
    state = ingest_files(sources=sources, dataset="dailycheckins", return_state=True)
    assert state.is_failed()  # one file failed: the shard says so

    class Run:  # what run_deployment returns for the shard, as far as the results need
        id = state.state_details.flow_run_id

    Run.state = state
    results = {
        Path(r["source"]).name: r for r in _shard_results(Run, [(s, "dailycheckins") for s in sources])
    }
    assert [results[f"dailycheckins-{i}.csv"]["status"] for i in range(3)] == ["success"] * 3
    assert results["missing.csv"]["status"] == "failed"
    # each loaded file's rows, from its run's state (a deployment's runs persist no result): text and JSON
    rows = "1 read, 1 loaded into tm.daily_checkins, 0 quarantined"
    assert [results[f"dailycheckins-{i}.csv"].get("summary") for i in range(3)] == [rows] * 3
    assert "summary" not in results["missing.csv"]
    assert backfill._what(results["dailycheckins-0.csv"]) == rows
    # and counted as a local backfill's are: in the JSON, and added up on the last line (it counted files only)
    assert (results["dailycheckins-0.csv"]["rows_read"], results["dailycheckins-0.csv"]["table"]) == (
        1,
        "tm.daily_checkins",
    )
    assert backfill._rows(list(results.values())) == "; rows: 3 read, 3 loaded, 0 quarantined"
    assert len({r["flow_run_id"] for r in results.values()}) == 4  # one ingest-file run per file

    # The same shard again: every file is already loaded. Each run says so (it said "success", as a load would).
    again = ingest_files(sources=sources[:3], dataset="dailycheckins", return_state=True)
    assert again.is_completed()
    Run.id, Run.state = again.state_details.flow_run_id, again
    repeated = _shard_results(Run, [(s, "dailycheckins") for s in sources[:3]])
    assert [(r["status"], r["state"]) for r in repeated] == [("skipped", "Skipped")] * 3, repeated
    assert all(r["error"].startswith("already loaded") for r in repeated), repeated


def test_a_deployment_that_does_not_exist_is_one_readable_error(sluice_env: Path) -> None:
    folder = sluice_env / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    (folder / "dailycheckins-0.csv").write_text("user,timestamp,hours,project\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["backfill", str(folder), "--deployment", "ingest-files/nope", "--json"])
    assert result.exit_code == 1
    assert "results" not in result.stdout  # no per-file results: nothing was started
    assert "deployment 'ingest-files/nope' not found" in result.stderr, result.stderr


def test_human_output_starts_with_the_results(sluice_env: Path) -> None:
    folder = sluice_env / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    (folder / "dailycheckins-0.csv").write_text(
        "user,timestamp,hours,project\nu,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8"
    )
    result = CliRunner().invoke(app, ["backfill", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("success  "), repr(
        result.stdout
    )  # no blank line left by the progress bar


def test_entries_that_are_not_loadable_files_are_each_reported_and_fail_the_backfill(
    sluice_env: Path,
) -> None:
    """A broken link, a pipe, a folder named as a file with nothing in it, a link to a folder: each is a failed
    result with its reason (text and JSON), exit 1. They used to be left out without a word (3 landed, 1 loaded)."""
    import os

    folder = sluice_env / "landing" / "odd"
    folder.mkdir(parents=True)
    (folder / "dailycheckins-ok.csv").write_text(
        "user,timestamp,hours,project\nok,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8"
    )
    (folder / "dailycheckins-gone.csv").symlink_to(folder / "moved-away.csv")
    os.mkfifo(folder / "dailycheckins-pipe.csv")
    (folder / "dailycheckins-dir.csv").mkdir()
    elsewhere = sluice_env / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dailycheckins-linked.csv").write_text("user\n", encoding="utf-8")
    (folder / "more").symlink_to(elsewhere, target_is_directory=True)
    spark = folder / "dailycheckins-spark.csv"  # a folder of part files: its files are listed, not the folder
    spark.mkdir()
    (spark / "part-0.csv").write_text(
        "user,timestamp,hours,project\nsp,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8"
    )
    (folder / "notes").mkdir()  # a plain folder, nothing to say
    (folder / ".hidden.csv").write_text("x\n", encoding="utf-8")  # left out, as documented

    runner = CliRunner()
    result = runner.invoke(app, ["backfill", str(folder), "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    by_name = {Path(r["source"]).name: r for r in body["results"]}
    assert {n: r["status"] for n, r in by_name.items()} == {
        "dailycheckins-ok.csv": "success",
        "part-0.csv": "success",
        "dailycheckins-gone.csv": "failed",
        "dailycheckins-pipe.csv": "failed",
        "dailycheckins-dir.csv": "failed",
        "more": "failed",
    }
    assert (body["files"], body["success"], body["failed"]) == (6, 2, 4)
    assert by_name["dailycheckins-gone.csv"]["error"].startswith("not ingested: a broken link (to ")
    assert (
        by_name["dailycheckins-pipe.csv"]["error"]
        == "not ingested: not a regular file (a pipe, socket or device)"
    )
    assert by_name["dailycheckins-dir.csv"]["error"] == "not ingested: a folder, not a file"
    assert "a link to a folder, not followed" in by_name["more"]["error"]
    assert by_name["dailycheckins-pipe.csv"]["dataset"] == "dailycheckins"

    text = runner.invoke(app, ["backfill", str(folder)])
    assert text.exit_code == 1
    assert f"failed   {folder / 'dailycheckins-gone.csv'}  not ingested: a broken link" in text.stdout
    assert "6 files: 0 loaded, 2 skipped, 4 failed" in text.stdout


def test_a_file_the_listing_cannot_read_is_reported_not_dropped() -> None:
    """As a user without read permission (root reads everything, so root runs it as nobody): the file and the
    folder are entries with their reasons. A folder that could not be read was skipped silently with its files."""
    import os
    import sys
    import tempfile

    if os.geteuid() == 0 and not os.access("/usr/bin/setpriv", os.X_OK):
        pytest.skip("as root, needs setpriv to run the listing as another user")
    with tempfile.TemporaryDirectory(prefix="sluice-unreadable-", dir="/tmp") as scratch:
        Path(scratch).chmod(0o755)  # reachable by the other user (the tests' own TMPDIR is private)
        folder = Path(scratch) / "landing"
        _list_unreadable(folder, os.geteuid() == 0, sys.executable)


def _list_unreadable(folder: Path, as_nobody: bool, python: str) -> None:
    import subprocess

    folder.mkdir()
    (folder / "dailycheckins-ok.csv").write_text("user\n", encoding="utf-8")
    (folder / "dailycheckins-secret.csv").write_text("user\n", encoding="utf-8")
    (folder / "dailycheckins-secret.csv").chmod(0o000)
    (folder / "locked").mkdir()
    (folder / "locked" / "dailycheckins-in.csv").write_text("user\n", encoding="utf-8")
    (folder / "locked").chmod(0o000)
    code = (
        "import sys; from sluice.adapters.storage import list_files; l = list_files(sys.argv[1]); "
        "print([p.rsplit('/', 1)[-1] for p in l.files]); "
        "print([(u.uri.rsplit('/', 1)[-1], u.reason, u.always) for u in l.unlisted])"
    )
    command = [python, "-c", code, str(folder)]
    if as_nobody:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    out = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    files, unlisted = out.stdout.splitlines()
    assert files == "['dailycheckins-ok.csv']"
    assert unlisted == (
        "[('dailycheckins-secret.csv', 'cannot be read: Permission denied', False), "
        "('locked', 'folder not read: Permission denied', True)]"
    )


def test_an_s3_object_named_as_a_folder_is_reported_and_a_folder_marker_is_not(
    sluice_env: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """``foo/`` with no bytes is the console's folder marker, not a file: left out (README). ``foo/`` holding
    bytes is a real object that cannot load under that key: a failed result with why, never dropped."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="landing/tm/", Body=b"")
    s3.put_object(Bucket=s3_bucket, Key="landing/tm/dailycheckins-a.csv/", Body=b"user\n")
    s3.put_object(
        Bucket=s3_bucket,
        Key="landing/tm/dailycheckins-b.csv",
        Body=b"user,timestamp,hours,project\ns3,2019-01-01 00:00:00 UTC,1,p\n",
    )
    result = CliRunner().invoke(app, ["backfill", f"s3://{s3_bucket}/landing/", "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    assert [(r["source"], r["status"]) for r in body["results"]] == [
        (f"s3://{s3_bucket}/landing/tm/dailycheckins-a.csv/", "failed"),
        (f"s3://{s3_bucket}/landing/tm/dailycheckins-b.csv", "success"),
    ]
    assert body["results"][0]["error"] == (
        "not ingested: an object of 5 bytes whose key ends in '/' (a folder's name): copy it to a key with a file "
        "name to load it"
    )


def test_a_folder_that_is_not_there_is_said_so(sluice_env: Path) -> None:
    """A mistyped PREFIX said "no files that any dataset claims", as an empty folder does."""
    missing = sluice_env / "landing" / "no-such-folder"
    result = CliRunner().invoke(app, ["backfill", str(missing)])
    assert result.exit_code == 1 and f"{missing}: no such folder" in result.stderr, result.stderr
    (sluice_env / "landing" / "empty").mkdir(parents=True)
    result = CliRunner().invoke(app, ["backfill", str(sluice_env / "landing" / "empty")])
    assert result.exit_code == 1 and "no files that any dataset claims" in result.stderr, result.stderr


#: A landing prefix as tools leave it: what a backfill takes (True) and what is not a landed file (False).
LANDED = {
    "dailycheckins-a.csv": True,
    "tm/dailycheckins-b.csv": True,
    ".dailycheckins-c.csv": False,  # hidden: an editor's or a sync tool's temporary copy
    "tm/.~lock.dailycheckins-b.csv#": False,
    "dailycheckins-d.csv.part": False,  # a copy in flight (a download tool, put_file)
    "tm/dailycheckins-e.csv.1234-ab12.part": False,
    ".staging/dailycheckins-f.csv": False,  # in a hidden folder
    "tm/.ipynb_checkpoints/dailycheckins-b-checkpoint.csv": False,
}


def test_a_folder_and_an_s3_prefix_leave_out_the_same_hidden_and_partial_files(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """The same tree in a folder and under an S3 prefix lists the same files. S3 listed every hidden key and
    every ``*.part`` as a landed file (a tool copying through a ``.part`` key got it ingested, half-written), and
    a folder listed the files of hidden folders (``.ipynb_checkpoints/``): README "Backfill"."""
    import boto3

    from sluice.adapters.storage import list_files

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for relative in LANDED:
        path = tmp_path / "landing" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user\n", encoding="utf-8")
        s3.put_object(Bucket=s3_bucket, Key=f"landing/{relative}", Body=b"user\n")
    expected = sorted(relative for relative, landed in LANDED.items() if landed)

    local = list_files(str(tmp_path / "landing"))
    on_s3 = list_files(f"s3://{s3_bucket}/landing/")
    assert [str(Path(f).relative_to(tmp_path / "landing")) for f in local.files] == expected
    assert [f.removeprefix(f"s3://{s3_bucket}/landing/") for f in on_s3.files] == expected
    assert (local.unlisted, on_s3.unlisted) == ([], [])
    # a prefix that is not a whole folder name is read from its folder, as S3 matches it
    partial = list_files(f"s3://{s3_bucket}/landing/daily")
    assert [f.rsplit("/", 1)[-1] for f in partial.files] == ["dailycheckins-a.csv"]
    # a file named by the user is theirs to ingest, whatever its name
    named = f"s3://{s3_bucket}/landing/dailycheckins-d.csv.part"
    assert list_files(named).files == [named]
    assert list_files(str(tmp_path / "landing" / ".dailycheckins-c.csv")).files == [
        str(tmp_path / "landing" / ".dailycheckins-c.csv")
    ]


def test_an_s3_event_for_a_hidden_or_partial_key_is_skipped_unless_named_with_a_dataset(
    sluice_env: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """An S3 event arrives for every key a tool writes, its ``.part`` copy in flight too: what a backfill leaves
    out is skipped with why (it was claimed by ``*dailycheckins*.csv``-like patterns and loaded, half-written);
    with --dataset the user names it, and it loads."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    body = b"user,timestamp,hours,project\nev,2019-01-01 00:00:00 UTC,1,p\n"
    for key in ("landing/.dailycheckins-h.csv", "landing/data2bots/orders/orders-1.csv.part"):
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
        result = CliRunner().invoke(app, ["ingest", f"s3://{s3_bucket}/{key}", "--json"])
        report = json.loads(result.stdout)
        assert (result.exit_code, report["status"]) == (0, "skipped"), result.output
        assert "a hidden or partial object" in report["error"] and "--dataset NAME" in report["error"]
    named = f"s3://{s3_bucket}/landing/.dailycheckins-h.csv"
    result = CliRunner().invoke(app, ["ingest", named, "--dataset", "dailycheckins", "--json"])
    assert (result.exit_code, json.loads(result.stdout)["rows_loaded"]) == (0, 1), result.output


def test_each_loaded_file_says_its_rows_and_the_total_adds_them_up(sluice_env: Path) -> None:
    """A soft backfill of the real TM check-ins: a file whose bad rows were quarantined said only ``success  x.csv``
    (its rows, and that any were set aside, were in ``--json`` alone)."""
    real = shared_file("tm", "dailycheckins_sample.csv")
    lines = real.read_text(encoding="utf-8").splitlines()
    folder = sluice_env / "landing" / "tm" / "dailycheckins"
    folder.mkdir(parents=True)
    (folder / "dailycheckins-a.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = ["arya,2019-13-01 00:00:00 UTC,3,x", "bran,2019-01-01 00:00:00 UTC,25,y"]
    (folder / "dailycheckins-b.csv").write_text(
        "\n".join([lines[0], *lines[1:101], *bad]) + "\n", encoding="utf-8"
    )
    records = len(lines) - 1  # the sample has no quoted line breaks: one record per line

    result = CliRunner().invoke(app, ["backfill", str(folder), "--mode", "soft"])

    assert result.exit_code == 0, result.output
    by_file = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("success")}
    assert (
        f"{records:,} read, {records:,} loaded into tm.daily_checkins, 0 quarantined"
        in by_file[str(folder / "dailycheckins-a.csv")]
    ), result.stdout
    second = by_file[str(folder / "dailycheckins-b.csv")]
    assert "102 read, 100 loaded into tm.daily_checkins, 2 quarantined (" in second, result.stdout
    assert second.rstrip().endswith(".rows.csv)") and "/quarantine/dailycheckins/" in second
    total = result.stdout.strip().splitlines()[-1]
    assert total == (
        f"2 files: 2 loaded, 0 skipped, 0 failed; rows: {records + 102:,} read, {records + 100:,} loaded, "
        "2 quarantined"
    ), total


def test_files_no_dataset_claims_are_counted_not_silently_left_out(sluice_env: Path) -> None:
    """A Totesys export's ``staff.csv`` landed beside the check-ins: no dataset claims it, and the backfill said
    nothing of it (``1 files: 1 loaded…``); a folder of only such files said "no files that any dataset claims"
    without a word of what it holds. Now both count and name them, and say how to load them."""
    folder = sluice_env / "landing" / "mixed"
    folder.mkdir(parents=True)
    tm = shared_file("tm", "dailycheckins_sample.csv")
    (folder / tm.name).write_bytes(tm.read_bytes())
    (folder / "staff.csv").write_bytes(shared_file("totesys", "staff.csv").read_bytes())

    text = CliRunner().invoke(app, ["backfill", str(folder)])
    assert text.exit_code == 0, text.output
    assert text.stdout.strip().splitlines()[-1] == (
        "1 file: 1 loaded, 0 skipped, 0 failed; rows: 2,034 read, 2,034 loaded, 0 quarantined; "
        "1 file no dataset claims left out (staff.csv: --dataset NAME loads them as NAME)"
    ), text.stdout
    body = json.loads(CliRunner().invoke(app, ["backfill", str(folder), "--json"]).stdout)
    assert (body["files"], body["skipped"], body["unclaimed"]) == (1, 1, 1), body
    assert body["unclaimed_files"] == [str(folder / "staff.csv")]  # which, not only how many

    (folder / tm.name).unlink()
    (folder / "address.csv").write_bytes(shared_file("totesys", "address.csv").read_bytes())
    none = CliRunner().invoke(app, ["backfill", str(folder)])
    assert none.exit_code == 1
    assert " ".join(none.stderr.split()) == (
        f"error: {folder}: no files that any dataset claims (it holds 2 files named as no dataset's are: "
        "address.csv and 1 more; --dataset NAME loads them as NAME)"
    ), none.stderr


def test_a_failed_files_line_names_it_once_and_a_file_named_as_prefix_says_why_it_is_not_taken(
    sluice_env: Path,
) -> None:
    """A failed file's line gave its path twice (``failed   /…/x.csv  /…/x.csv: empty file …``: the error starts with
    it); a PREFIX that is one file no dataset claims said it "holds 1 file named as no dataset's are"."""
    folder = sluice_env / "landing" / "mistakes"
    folder.mkdir(parents=True)
    empty = folder / "dailycheckins-empty.csv"
    empty.write_text("", encoding="utf-8")
    text = CliRunner().invoke(app, ["backfill", str(folder)])
    assert text.exit_code == 1, text.output
    assert f"failed   {empty}  empty file (no header line)" in text.stdout.splitlines(), text.stdout
    body = json.loads(CliRunner().invoke(app, ["backfill", str(folder), "--json"]).stdout)
    assert body["results"][0]["error"] == f"{empty}: empty file (no header line)"  # the JSON keeps it whole

    tsv = folder / "checkins.tsv"
    tsv.write_text("user\ttimestamp\thours\tproject\n", encoding="utf-8")
    alone = CliRunner().invoke(app, ["backfill", str(tsv)])
    assert alone.exit_code == 1
    assert " ".join(alone.stderr.split()) == (
        f"error: {tsv}: no dataset claims this file's name; --dataset NAME loads it as NAME"
    ), alone.stderr


def test_the_warehouse_pool_holds_every_connection_of_the_runs_a_backfill_runs_at_once(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--concurrency 8`` once failed a file after 30 s ("QueuePool limit of size 5 overflow 5 reached"): a run
    holds up to three connections at once and the pool had ten. What one run holds at its peak is measured here,
    on a real run, and the pool is sized for that many per run."""
    import sqlalchemy as sa

    from sluice.adapters import warehouse
    from sluice.cli.runner import run_ingest

    monkeypatch.setattr(warehouse, "_runs", 1)  # this worker's later tests get the default size back
    engine = warehouse.get_engine()
    out, peak = [0], [0]

    def checkout(*_: object) -> None:
        out[0] += 1
        peak[0] = max(peak[0], out[0])

    def checkin(*_: object) -> None:
        out[0] -= 1

    sa.event.listen(engine.pool, "checkout", checkout)
    sa.event.listen(engine.pool, "checkin", checkin)
    try:
        path = sluice_env / "landing" / "dailycheckins-peak.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user,timestamp,hours,project\nu,2019-01-01 00:00:00 UTC,1,p\n", encoding="utf-8")
        assert run_ingest(str(path), dataset="dailycheckins").status == "success"
    finally:
        sa.event.remove(engine.pool, "checkout", checkout)
        sa.event.remove(engine.pool, "checkin", checkin)
    assert 1 < peak[0] <= warehouse.CONNECTIONS_PER_RUN

    assert warehouse.serve_runs(8) == 8
    held = []
    try:  # eight runs' connections at once: on a pool of 5 + 5 the eleventh waited 30 s, then failed
        for _ in range(8 * warehouse.CONNECTIONS_PER_RUN):
            held.append(warehouse.get_engine().connect())
    finally:
        for conn in held:
            conn.close()


def test_a_concurrency_the_warehouse_cannot_serve_is_lowered_to_what_it_can(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from sluice.adapters import warehouse

    monkeypatch.setattr(warehouse, "_runs", 1)
    runs = warehouse.serve_runs(1000)
    with warehouse.get_engine().connect() as conn:
        limit = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
    assert 1 <= runs < 1000 and runs * warehouse.CONNECTIONS_PER_RUN < limit


def test_a_backfill_says_when_it_lowers_its_concurrency_and_still_loads_every_file(
    sluice_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other clients hold all but one run's worth of the warehouse's connections: ``--concurrency 3`` runs one
    file at a time, says so in one warning line, and loads all three."""
    import sqlalchemy as sa

    from sluice.adapters import warehouse

    monkeypatch.setattr(warehouse, "_runs", 1)
    folder = sluice_env / "landing" / "lowered"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"dailycheckins-{i}.csv").write_text(
            f"user,timestamp,hours,project\nlow{i},2019-01-01 00:00:00 UTC,1,lowered\n", encoding="utf-8"
        )
    others = sa.create_engine(warehouse.database_url(), poolclass=sa.pool.NullPool)
    held: list[sa.Connection] = []
    try:
        while warehouse.serve_runs(3) > 1:  # the other clients, one connection at a time
            held.append(others.connect())
        result = CliRunner().invoke(
            app, ["backfill", str(folder), "--dataset", "dailycheckins", "--concurrency", "3"]
        )
    finally:
        for conn in held:
            conn.close()
        others.dispose()
    assert held, "the warehouse could serve 3 runs with no other client"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: --concurrency 3 lowered to 1: the warehouse has connections for 1 more run "
        f"({warehouse.CONNECTIONS_PER_RUN} each)"
    ], result.stderr
    assert result.exit_code == 0 and "3 files: 3 loaded" in result.stdout, result.stdout + result.stderr


def test_names_that_are_not_utf8_or_hold_control_characters_are_refused_each_on_one_line(
    sluice_env: Path,
) -> None:
    """A name in another encoding stopped the whole backfill with a traceback (the file registry could not hold
    it), and the files after it were not loaded; a newline in a name split the one line per file, an escape
    sequence recoloured the terminal. Each is now a failed result of its own, shown escaped; the rest loads."""
    import os

    folder = sluice_env / "landing" / "names"
    folder.mkdir(parents=True)
    good = "user,timestamp,hours,project\nok,2019-01-01 00:00:00 UTC,1,p\n"
    (folder / "dailycheckins-ok.csv").write_text(good, encoding="utf-8")
    latin1 = os.fsencode(folder) + b"/caf\xe9_dailycheckins.csv"
    with open(latin1, "wb") as handle:  # the same rows as a file loaded before: the backfill recorded a skip
        handle.write(good.encode())
    (folder / "esc\x1b[31mred_dailycheckins.csv").write_text(good.replace("ok", "esc"), encoding="utf-8")
    (folder / "new\nline_dailycheckins.csv").write_text(good.replace("ok", "nl"), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(folder / "dailycheckins-ok.csv")]).exit_code == 0

    result = runner.invoke(app, ["backfill", str(folder), "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    body = json.loads(result.stdout)
    assert {r["source"]: (r["status"], r["error"]) for r in body["results"]} == {
        f"{folder}/caf\\xe9_dailycheckins.csv": (
            "failed",
            "not ingested: its name is not UTF-8 text; rename it",
        ),
        f"{folder}/dailycheckins-ok.csv": ("skipped", body["results"][1]["error"]),
        f"{folder}/esc\\x1b[31mred_dailycheckins.csv": (
            "failed",
            "not ingested: its name holds a control character (shown escaped); rename it",
        ),
        f"{folder}/new\\nline_dailycheckins.csv": (
            "failed",
            "not ingested: its name holds a control character (shown escaped); rename it",
        ),
    }
    text = runner.invoke(app, ["backfill", str(folder)])
    lines = text.stdout.splitlines()
    assert len(lines) == 5 and "\x1b" not in text.stdout, text.stdout  # a line per file, and the total
    assert lines[-1].startswith("4 files: 0 loaded, 1 skipped, 3 failed")

    said = runner.invoke(app, ["ingest", os.fsdecode(latin1)])
    assert (said.exit_code, said.stdout) == (1, ""), said.output
    assert (
        said.stderr.strip()
        == f"error: {folder}/caf\\xe9_dailycheckins.csv: its name is not UTF-8 text; rename it"
    )


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("", "error: no file given: sluice ingest PATH or s3://BUCKET/KEY"),
        (
            "http://example.com/x_dailycheckins.csv",
            "error: http://example.com/x_dailycheckins.csv: http:// is not read; land the file in a folder or S3 "
            "(a path or s3://BUCKET/KEY)",
        ),
    ],
)
def test_an_ingest_of_no_file_or_of_a_web_address_is_a_usage_error(source: str, said: str) -> None:
    """``''`` was "is a folder" (the current one); ``http://…`` was read as the local path ``./http:/…``."""
    result = CliRunner().invoke(app, ["ingest", source])
    assert (result.exit_code, result.stderr.strip()) == (2, said)


def test_an_ingest_of_a_pipe_says_it_is_not_a_regular_file(sluice_env: Path) -> None:
    """It said "file not found", of a file that is there."""
    import os

    pipe = sluice_env / "landing" / "dailycheckins-pipe.csv"
    pipe.parent.mkdir(parents=True)
    os.mkfifo(pipe)
    result = CliRunner().invoke(app, ["ingest", str(pipe), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["status"], report["error"]) == (
        "failed",
        f"{pipe}: not a regular file (a pipe, socket or device)",
    )
