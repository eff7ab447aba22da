"""The Dockerfile, checked without a Docker engine (tests/deploy/test_image.py builds and runs it when one answers)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_multi_stage_non_root_project_at_opt_prefect_sluice() -> None:
    steps = instructions()
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) >= 3 and any(" AS runtime" in s for s in stages)
    runtime = steps[max(i for i, (op, arg) in enumerate(steps) if op == "FROM") :]
    users = [arg for op, arg in runtime if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("WORKDIR", "/opt/prefect/sluice") in runtime
    assert any(op == "ENV" and "SLUICE_JSON_LOGS=true" in arg for op, arg in runtime)
    assert "ghcr.io/astral-sh/uv:0.13.9" in DOCKERFILE


def test_the_entrypoint_forwards_a_stop_to_the_flows_process_and_the_code_is_compiled_and_read_only() -> None:
    """PID 1 is sluice.init (tests/deploy/test_init.py): as `prefect flow-run execute`, ECS's SIGTERM was ignored.
    The working folder's copy of the code, which the flows import, is compiled at build and owned by root."""
    runtime = instructions()[max(i for i, (op, _) in enumerate(instructions()) if op == "FROM") :]
    assert ("ENTRYPOINT", '["python", "-m", "sluice.init"]') in runtime
    copies = [arg for op, arg in runtime if op == "COPY"]
    assert copies and not any("--chown" in arg for arg in copies)
    assert any(
        op == "RUN" and "compileall" in arg and "sluice flows tasks schemas" in arg
        for op, arg in instructions()
    )


def test_installs_from_the_lock_file_without_any_dependency_group() -> None:
    runs = [arg for op, arg in instructions() if op == "RUN" and "uv sync" in arg]
    # --no-dev would still install the other default groups (deploy tooling, the embedded pgserver).
    assert runs and all("--frozen" in r and "--no-default-groups" in r for r in runs)
    assert not any("pip install" in arg for op, arg in instructions() if op == "RUN")


def test_copies_every_package_and_every_entrypoint() -> None:
    copied = {arg.split()[0] for op, arg in instructions() if op == "COPY" and "--from" not in arg}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
        "wheel"
    ]["packages"]
    assert set(packages) <= copied
    assert {"pyproject.toml"} <= {
        p for arg in (a for o, a in instructions() if o == "COPY") for p in arg.split()
    }
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:  # the image's
        top = deployment["entrypoint"].split("/", 1)[0]
        assert top in copied, deployment["name"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and ".sluice" in ignored


def test_the_locked_runtime_set_is_the_one_the_tests_run_minus_dev_tools() -> None:
    uv = ROOT / ".uv" / "bin" / "uv"
    binary = str(uv) if uv.exists() else shutil.which("uv")
    if binary is None:
        pytest.skip("uv is not installed here (./run installs it)")
    out = subprocess.run(
        [binary, "export", "--frozen", "--no-default-groups", "--no-hashes", "--no-emit-project"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    pins = dict(line.split("==", 1) for line in out.splitlines() if "==" in line and not line.startswith("#"))
    pins = {k.strip(): v.split()[0] for k, v in pins.items()}
    assert pins["prefect"] == "3.8.8"
    assert {"prefect-aws", "pandera", "sqlalchemy", "psycopg2-binary", "boto3", "uvicorn"} <= set(pins)
    # Not in the ECS image: dev tools, the benchmark peer, deploy tooling, the embedded PostgreSQL.
    assert not {"pytest", "moto", "ruff", "dlt", "bandit", "prefect-docker", "pgserver"} & set(pins)


def test_the_build_context_leaves_out_every_secret_bearing_file_wherever_it_is(tmp_path: Path) -> None:
    """The Dockerfile copies whole folders (sluice, flows, tasks, schemas): a home made by a command run inside one
    (``.sluice``: deploy.env, the embedded warehouse), a ``.env`` or a key there would be baked into the image.
    Checked with docker-py's own .dockerignore matching (what prefect-docker's build step sends as context)."""
    from docker.utils.build import exclude_paths

    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    secret = [
        ".sluice/deploy.env",
        ".env",
        "sluice/.sluice/deploy.env",
        "sluice/.sluice/pg/base/1/1259",
        "flows/.env",
        "tasks/.env.production",
        "schemas/prod.env",
        "sluice/deploy-key.pem",
        "flows/id_rsa",
        "sluice/.aws/credentials",
        "sluice/.netrc",
        "sluice/.envrc",
        "sluice/.pgpass",
        "sluice/credentials.json",
        "schemas/key.p12",
        "tasks/debug.log",
        "flows/.ipynb_checkpoints/x.py",
        ".git/config",
        ".venv/bin/python",
    ]
    kept = ["sluice/__init__.py", "flows/ingest.py", "tasks/toolkit.py", "schemas/tm.py", "pyproject.toml"]
    for name in (*secret, *kept):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    sent = exclude_paths(str(tmp_path), patterns)
    assert set(kept) <= sent  # the scan sees the real context
    assert sorted(sent & set(secret)) == []
