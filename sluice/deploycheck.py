"""Deploy-time steps of ``prefect.yaml`` and ``deployments/local.yaml``, and the check that runs before anything
is deployed.

``prefect deploy`` renders an unset ``{{ $VAR }}`` as ``""`` without a word (a task with no role, a log zone of
``""``): :func:`check` is the first build step and fails the deploy naming every variable that is missing.
The other steps are plain functions Prefect imports by name (``sluice.deploycheck.image_tag``, …). Prefect runs
a file's global build and push steps once *per deployment*; these steps return the same value for the whole
``prefect deploy --all`` process, so prefect-docker's step cache builds and pushes the image once.

``python -m sluice.deploycheck prefect.yaml`` runs the same check from a shell (``./run deploy`` does).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sluice.errors import SluiceError

PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# May be empty, and what follows when they are.
OPTIONAL = {
    "SLUICE_TOTESYS_SOURCE_SECRET_ARN": "no Totesys source in the stack: totesys is deployed without an active schedule",
    "SLUICE_PREFECT_API_KEY_SECRET_ARN": (
        "no PrefectApiKey in the stack: flow-run containers get the deploying profile's API key in their RunTask "
        "request's plain environment"
    ),
}
# What a value must look like, by the variable's suffix: a typo fails here, not in the first ECS task.
SHAPES = {"_ARN": "arn:", "_URI": "s3://"}
HINT = "run `./run sluice aws setup --stack <stack>` (writes .sluice/deploy.env) or export them; see README 'Deploy to AWS'"


class DeployCheckFailed(SluiceError):
    """A deployment file needs variables that are not set (or not well formed)."""


# Outputs of `check` a file may use, and the variables they are made of.
DERIVED = {
    "check.network_configuration": ("SLUICE_SUBNET_IDS", "SLUICE_TASK_SECURITY_GROUP"),
    "check.totesys_schedule_active": ("SLUICE_TOTESYS_SOURCE_SECRET_ARN",),
}


def placeholders(text: str) -> list[str]:
    """Every variable a deployment file needs, in order of first use (comment lines left out): its
    ``{{ $VAR }}`` and those behind the ``{{ check.* }}`` outputs it uses."""
    names: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        names += [m.group(1) for m in PLACEHOLDER.finditer(line)]
        names += [name for output, needs in DERIVED.items() if output in line for name in needs]
    return list(dict.fromkeys(names))


API_KEY_VARIABLE = "SLUICE_PREFECT_API_KEY_SECRET_ARN"


def problems(text: str, environ: Mapping[str, str], api_key: str | None = None) -> list[str]:
    """One line per variable that is missing or malformed; empty when the file can be deployed.

    ``api_key``: the deploying Prefect profile's API key, looked up only when the file names the key's secret and
    it is set (None: looked up in Prefect's settings then).
    """
    found = []
    for name in placeholders(text):
        raw = environ.get(name, "")
        if any(ord(c) < 32 for c in raw) or (raw.strip() and raw != raw.strip()):
            # Prefect renders the raw value: `us-east-1\r` from an env file saved with Windows line endings
            fix = (
                "the file has Windows line endings: `sed -i 's/\\r$//' FILE`"
                if "\r" in raw
                else "remove them"
            )
            found.append(f"{name}={raw!r} has spaces around it or control characters in it ({fix})")
            continue
        value = raw.strip()
        if not value:
            if name not in OPTIONAL:
                found.append(f"{name} is not set")
            continue
        for suffix, prefix in SHAPES.items():
            if name.endswith(suffix) and not value.startswith(prefix):
                found.append(f"{name}={value!r} does not start with {prefix!r}")
        if name == API_KEY_VARIABLE and not (api_key if api_key is not None else _prefect_api_key()):
            found.append(
                f"{API_KEY_VARIABLE} is set (the stack's PrefectApiKey) but this Prefect profile has no API key "
                "(a self-hosted server): prefect-aws's ECS worker, which has none either, would fail every flow "
                "run with KeyError: 'PREFECT_API_KEY'. For a self-hosted server, update the stack with "
                "PrefectApiKey empty (then `sluice aws setup` again); for Prefect Cloud, `prefect cloud login`"
            )
    return found


def _prefect_api_key() -> str:
    """The API key of the Prefect profile in use (``PREFECT_API_KEY``, env or profile); "" when it has none."""
    from prefect.settings import PREFECT_API_KEY  # Prefect only when the stack has the key's secret

    return str(PREFECT_API_KEY.value() or "").strip()


def check(prefect_file: str = "prefect.yaml") -> dict[str, Any]:
    """Build step: fail naming every missing variable; returns what the file's templates use from the check."""
    path = Path(prefect_file)
    found = problems(path.read_text(encoding="utf-8"), os.environ)
    if found:
        raise DeployCheckFailed(f"{path}: cannot deploy: " + "; ".join(found) + f". ({HINT})")
    return {
        "totesys_schedule_active": bool(os.environ.get("SLUICE_TOTESYS_SOURCE_SECRET_ARN", "").strip()),
        "network_configuration": network_configuration(os.environ),
        # Fresh base images on every build, unless SLUICE_IMAGE_PULL_BASE=false (offline builds from local bases).
        "pull_base_images": os.environ.get("SLUICE_IMAGE_PULL_BASE", "true").strip().lower() != "false",
    }


def network_configuration(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ECS tasks' awsvpcConfiguration: the stack's subnets and task security group, no public IP."""
    subnets = [s.strip() for s in environ.get("SLUICE_SUBNET_IDS", "").split(",") if s.strip()]
    group = environ.get("SLUICE_TASK_SECURITY_GROUP", "").strip()
    if not subnets:
        return {}
    return {"subnets": subnets, "securityGroups": [group] if group else [], "assignPublicIp": "DISABLED"}


@lru_cache(maxsize=1)
def _tag() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 (git from PATH)
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        sha = "nogit"
    return f"{sha}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def image_tag() -> dict[str, str]:
    """Build step: ``<git sha>-<UTC time>``, the same for every deployment of one ``prefect deploy`` process.

    The time makes a re-deploy of the same commit a new tag (the ECR repository's tags are immutable).
    """
    return {"tag": _tag()}


def working_directory() -> dict[str, str]:
    """Build step: the directory ``prefect deploy`` runs in (the checkout), for a process worker's pull step."""
    return {"directory": str(Path.cwd().resolve())}


@lru_cache(maxsize=8)
def _login(registry: str, region: str | None) -> None:
    import boto3  # AWS modules only when an ECR image is pushed

    token = boto3.client("ecr", region_name=region).get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    result = subprocess.run(  # noqa: S603 (the registry's host, from ECR)
        ["docker", "login", "--username", user, "--password-stdin", registry],  # noqa: S607 (docker from PATH)
        input=password, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise DeployCheckFailed(f"docker login {registry} failed: {result.stderr.strip() or result.stdout}")


def registry_login(image_repo: str, region: str | None = None) -> dict[str, str]:
    """Push step: log Docker in to the repository's registry when it is ECR (once per process).

    Any other registry (a local one in tests, Docker Hub) uses the credentials Docker already has.
    """
    registry = image_repo.split("/", 1)[0]
    if ".dkr.ecr." in registry:
        _login(registry, region or None)
    return {"registry": registry}


@lru_cache(maxsize=1)
def _register() -> None:
    from sluice.adapters.notify import (
        register_blocks,  # Prefect only for prefect.yaml's block step, not the check
    )

    register_blocks()


def register_block_types() -> dict[str, str]:
    """Build step: register Sluice's notification block types with the API once per deploy (not per run)."""
    _register()
    return {}


#: `./run deploy`'s own flag: the deploy needs a Prefect API of the user's (Cloud, or a server of theirs).
NEED_API = "--need-api"


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    files = [a for a in args if a != NEED_API] or ["prefect.yaml"]
    failed = False
    for name in files:
        for line in problems(Path(name).read_text(encoding="utf-8"), os.environ):
            print(f"{name}: {line}", file=sys.stderr)
            failed = True
    if NEED_API in args:
        from sluice.runtime import users_api_url  # reads the profile's file, without importing Prefect

        if users_api_url() is None:
            # `prefect deploy` made the deployments on a temporary server of its own, gone when it ended
            print(
                "no Prefect API to deploy to: `.venv/bin/prefect cloud login` first (or set PREFECT_API_URL)",
                file=sys.stderr,
            )
            failed = True
    if failed:
        print(HINT, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
