"""The README's "Deploy to AWS" block is what a user types: at most 8 commands, and every file, stack parameter,
stack output and variable it names exists."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

from tests.deploy.conftest import template

ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", section("Deploy to AWS"), re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def output_variables() -> dict[str, str]:
    out = {}
    for key, output in template()["Outputs"].items():
        words = (output.get("Description") or "").split()
        if words and re.fullmatch(r"(AWS|SLUICE)_[A-Z0-9_]+", words[0]):
            out[words[0]] = key
    return out


def test_at_most_eight_commands_from_an_empty_account_to_rows() -> None:
    cmds = commands()
    assert 1 <= len(cmds) <= 8, cmds
    assert any(c.startswith("aws cloudformation deploy") for c in cmds)
    assert "./run sluice aws setup --stack sluice" in cmds and "./run deploy" in cmds
    assert any("aws s3 cp" in c for c in cmds)  # the upload that lands rows
    # `pip install` into the uv environment fails (no pip there) and the next `uv sync --frozen` undoes it.
    assert "pip install" not in section("Deploy to AWS")


def test_every_file_it_names_exists() -> None:
    text = " ".join(commands()) + section("Deploy to AWS")
    files = set(
        re.findall(
            r"(?<![\w/.])((?:deployments|\.github)/[\w./-]+\.(?:ya?ml|json)|prefect\.yaml|Dockerfile)", text
        )
    )
    assert {
        "deployments/cloudformation/sluice.yaml",
        "deployments/webhook-template.json",
        "prefect.yaml",
    } <= files
    for name in files:
        assert (ROOT / name).is_file(), name


def test_stack_parameters_given_are_the_template_s_and_every_required_one_is_given() -> None:
    deploy = next(c for c in commands() if c.startswith("aws cloudformation deploy"))
    args = shlex.split(deploy)
    assert (
        args[args.index("--stack-name") + 1] == "sluice"
    )  # the stack `sluice aws setup --stack sluice` reads
    given = {a.split("=", 1)[0] for a in args[args.index("--parameter-overrides") + 1 :] if "=" in a}
    parameters = template()["Parameters"]
    assert given <= set(parameters)
    assert {k for k, v in parameters.items() if "Default" not in v} <= given


def test_every_stack_output_and_variable_it_names_exists() -> None:
    text = section("Deploy to AWS")
    outputs = set(template()["Outputs"])
    named = set(re.findall(r"`([A-Z][A-Za-z]+(?:Arn|Uri|Name|Ids?))`", text))
    assert named and named <= outputs | set(template()["Parameters"]), named - outputs
    variables = set(re.findall(r"\$\{?((?:SLUICE|AWS)_[A-Z0-9_]+)", " ".join(commands())))
    assert variables and variables <= set(output_variables()), variables - set(output_variables())


def test_the_commands_it_runs_exist() -> None:
    from sluice.cli.aws import aws_app

    assert "setup" in {c.name or c.callback.__name__ for c in aws_app.registered_commands}
    run = (ROOT / "run").read_text()
    assert re.search(r"^\s+deploy\)", run, re.M) and ".sluice/deploy.env" in run
    from sluice.cli.aws import setup

    # The env file `sluice aws setup` writes by default is the one ./run deploy sources.
    assert str(inspect.signature(setup).parameters["env_file"].default) == ".sluice/deploy.env"


def test_local_deployments_are_deployed_with_their_own_file() -> None:
    text = section("Deploy to AWS")
    assert "prefect deploy --all --prefect-file deployments/local.yaml" in text
    assert "SLUICE_PROJECT_DIR" not in (ROOT / "README.md").read_text()
