"""prefect.yaml pinned: deployments, entrypoints, pools, schedules, triggers (Prefect's own models), the UI form;
the webhook template renders real EventBridge bodies into events the trigger matches, with the right parameters."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "samples" / "s3-object-created.eventbridge.json"
AWS_FILE = ROOT / "prefect.yaml"
LOCAL_FILE = ROOT / "deployments" / "local.yaml"
EXPECTED_AWS = {
    ("ingest-file", "s3-event"): "flows/ingest.py:ingest_file",
    ("ingest-files", "backfill"): "flows/ingest_files.py:ingest_files",
    ("totesys", "every-20-minutes"): "flows/totesys.py:totesys",
    ("analytics", "daily"): "flows/data2bots.py:data2bots",
    ("customers", "daily"): "flows/sertis.py:sertis",
}
EXPECTED_LOCAL = {
    ("ingest-file", "local"): "flows/ingest.py:ingest_file",
    ("ingest-files", "backfill-local"): "flows/ingest_files.py:ingest_files",
    ("totesys", "every-20-minutes-local"): "flows/totesys.py:totesys",
    ("analytics", "daily-local"): "flows/data2bots.py:data2bots",
    ("customers", "daily-local"): "flows/sertis.py:sertis",
}
EXPECTED = {**EXPECTED_AWS, **EXPECTED_LOCAL}
# What `sluice aws setup` writes from the stack's outputs (values shaped like the real ones).
STACK_ENV = {
    "SLUICE_IMAGE_REPO": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sluice",
    "AWS_REGION": "us-east-1",
    "SLUICE_ECS_CLUSTER": "arn:aws:ecs:us-east-1:123456789012:cluster/sluice",
    "SLUICE_VPC_ID": "vpc-0123456789abcdef0",
    "SLUICE_SUBNET_IDS": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb",
    "SLUICE_TASK_SECURITY_GROUP": "sg-0123456789abcdef0",
    "SLUICE_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/sluice-task",
    "SLUICE_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sluice-execution",
    "SLUICE_LOG_GROUP": "/sluice/flow-runs",
    "SLUICE_LANDING_URI": "s3://sluice-landing-123456789012-us-east-1",
    "SLUICE_STAGING_URI": "s3://sluice-data-123456789012-us-east-1/staging",
    "SLUICE_QUARANTINE_URI": "s3://sluice-data-123456789012-us-east-1/quarantine",
    "SLUICE_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/warehouse-url",
    "SLUICE_LEDGER_TABLE": "sluice-run-ledger",
    "SLUICE_GLUE_DATABASE": "sluice_sertis",
    "SLUICE_TOTESYS_SOURCE_SECRET_ARN": "",
    "SLUICE_PREFECT_API_KEY_SECRET_ARN": "",
}


def config(path: Path = AWS_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def deployments(path: Path | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    from prefect.flows import load_flow_from_entrypoint

    out = {}
    for file in [path] if path else [AWS_FILE, LOCAL_FILE]:
        for d in config(file)["deployments"]:
            flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
            out[(flow.name, d["name"])] = d
    return out


def steps(section: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(next(iter(s)), next(iter(s.values()))) for s in section]


def rendered(d: dict[str, Any], environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A deployment as `prefect deploy` renders it: the env, then the outputs of the file's real check and
    tag steps (the image step's output as prefect-docker names it)."""
    from prefect.utilities.templating import apply_values

    from sluice.deploycheck import check, image_tag

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    outputs = {"check": check("prefect.yaml"), "image-tag": image_tag()}
    image = f"{environ['SLUICE_IMAGE_REPO']}:{outputs['image-tag']['tag']}"
    outputs["build-image"] = {"image": image, "image_name": environ["SLUICE_IMAGE_REPO"]}
    spec = apply_values(copy.deepcopy(d), environ, remove_notset=False)
    return apply_values(spec, outputs)


def test_every_deployment_is_pinned_and_its_entrypoint_loads() -> None:
    aws, local = deployments(AWS_FILE), deployments(LOCAL_FILE)
    assert {k: d["entrypoint"] for k, d in aws.items()} == EXPECTED_AWS
    assert {k: d["entrypoint"] for k, d in local.items()} == EXPECTED_LOCAL
    # prefect deploy --all stops at the first deployment whose pool does not exist: one pool per file.
    assert {d["work_pool"]["name"] for d in aws.values()} == {"sluice-ecs"}
    assert {d["work_pool"]["name"] for d in local.values()} == {"sluice-local"}


def test_one_global_build_and_push_with_a_tag_that_cannot_collide() -> None:
    c = config()
    assert not any({"build", "push", "pull"} & set(d) for d in c["deployments"])  # global, not per deployment
    build = steps(c["build"])
    # The check comes first: nothing is built, pushed or deployed with a variable missing.
    assert build[0] == ("sluice.deploycheck.check", {"id": "check", "prefect_file": "prefect.yaml"})
    assert ("sluice.deploycheck.register_block_types", {}) in build
    image = dict(build)["prefect_docker.deployments.steps.build_docker_image"]
    assert image["platform"] == "linux/amd64" and image["dockerfile"] == "Dockerfile"
    assert image["tag"] == "{{ image-tag.tag }}" and image["image_name"] == "{{ $SLUICE_IMAGE_REPO }}"
    assert image["pull"] == "{{ check.pull_base_images }}"  # fresh bases unless SLUICE_IMAGE_PULL_BASE=false
    push = [name for name, _ in steps(c["push"])]
    assert push == ["sluice.deploycheck.registry_login", "prefect_docker.deployments.steps.push_docker_image"]
    assert c["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect/sluice"}}
    ]


def test_the_image_tag_is_one_per_deploy_process_and_new_for_each_deploy() -> None:
    code = "from sluice.deploycheck import image_tag; print(image_tag()['tag'], image_tag()['tag'])"
    tags = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
        assert out[0] == out[1]  # every deployment of one `prefect deploy --all`: prefect-docker's cache hits
        tags.append(out[0])
        time.sleep(1.1)
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert all(t.startswith(sha.stdout.strip() + "-") for t in tags)
    assert tags[0] != tags[1]  # the same commit deployed again: a new tag (the ECR repository is IMMUTABLE)


def test_local_deployments_run_in_the_checkout_with_no_variable_to_forget() -> None:
    c = config(LOCAL_FILE)
    assert "$" not in json.dumps(c)  # no {{ $VAR }} at all
    build = steps(c["build"])
    assert build[0][0] == "sluice.deploycheck.check"
    assert ("sluice.deploycheck.working_directory", {"id": "checkout"}) in build
    assert c["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.directory }}"}}
    ]
    from sluice.deploycheck import working_directory

    assert working_directory() == {"directory": str(Path.cwd().resolve())}


def test_ecs_job_variables_validate_against_prefect_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSVariables, ECSWorker

    template = ECSWorker.get_default_base_job_template()
    for (flow, name), d in deployments(AWS_FILE).items():
        variables = rendered(d, STACK_ENV, monkeypatch)["work_pool"]["job_variables"]
        checked = ECSVariables(**variables)
        assert checked.family == "sluice" and checked.match_latest_revision_in_family, (flow, name)
        assert checked.cpu == 1024 and checked.memory == 4096
        assert checked.image.startswith(STACK_ENV["SLUICE_IMAGE_REPO"] + ":")
        assert (
            checked.cluster == STACK_ENV["SLUICE_ECS_CLUSTER"]
            and checked.vpc_id == STACK_ENV["SLUICE_VPC_ID"]
        )
        assert checked.network_configuration == {
            "subnets": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
            "securityGroups": ["sg-0123456789abcdef0"],
            "assignPublicIp": "DISABLED",
        }
        assert checked.task_role_arn == STACK_ENV["SLUICE_TASK_ROLE_ARN"]
        assert checked.execution_role_arn == STACK_ENV["SLUICE_EXECUTION_ROLE_ARN"]
        assert checked.cloudwatch_logs_options["awslogs-create-group"] == "false"
        assert (
            checked.env["SLUICE_JSON_LOGS"] == "true"
            and checked.env["SLUICE_GLUE_DATABASE"] == "sluice_sertis"
        )
        assert all(
            v and "{{" not in str(v)
            for k, v in checked.env.items()
            if k != "SLUICE_TOTESYS_SOURCE_SECRET_ARN"
        )
        # And through the worker's own template, as a run would be configured.
        config = asyncio.run(ECSJobConfiguration.from_template_and_values(template, variables))
        assert (
            config.vpc_id == STACK_ENV["SLUICE_VPC_ID"] and config.cluster == STACK_ENV["SLUICE_ECS_CLUSTER"]
        )
        assert config.network_configuration["assignPublicIp"] == "DISABLED"


def test_totesys_is_scheduled_only_when_the_stack_configures_its_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    spec = deployments(AWS_FILE)[("totesys", "every-20-minutes")]
    without = rendered(spec, STACK_ENV, monkeypatch)
    schedule = _schedule_config_to_deployment_schedule(without["schedules"][0])
    assert schedule["active"] is False  # no source: never a failure every 20 minutes
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice/totesys-source"
    with_source = rendered(spec, {**STACK_ENV, "SLUICE_TOTESYS_SOURCE_SECRET_ARN": arn}, monkeypatch)
    assert _schedule_config_to_deployment_schedule(with_source["schedules"][0])["active"] is True
    assert with_source["work_pool"]["job_variables"]["env"]["SLUICE_TOTESYS_SOURCE_SECRET_ARN"] == arn


def test_schedules_and_concurrency() -> None:
    d = deployments()
    assert d[("totesys", "every-20-minutes")]["schedules"][0]["interval"] == 1200
    assert d[("totesys", "every-20-minutes")]["concurrency_limit"] == {
        "limit": 1,
        "collision_strategy": "CANCEL_NEW",
    }
    assert d[("analytics", "daily")]["schedules"][0]["cron"] == "30 2 * * *"
    assert d[("customers", "daily")]["schedules"][0]["cron"] == "0 3 * * *"
    assert (
        d[("ingest-file", "s3-event")]["concurrency_limit"]["limit"] == 8
    )  # a burst queues, the warehouse holds
    assert all(
        s["active"] is False for k, v in d.items() if k[1].endswith("-local") for s in v.get("schedules", [])
    )


def test_triggers_validate_with_prefects_models() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.events.schemas.automations import CompoundTrigger, EventTrigger

    d = deployments()
    s3 = _initialize_deployment_triggers(
        "s3-event", copy.deepcopy(d[("ingest-file", "s3-event")]["triggers"])
    )
    assert len(s3) == 1 and isinstance(s3[0], EventTrigger)
    assert s3[0].expect == {"aws.s3.object.created"}
    assert s3[0].parameters == {
        "source": "s3://{{ event.payload.bucket }}/{{ event.payload.key }}",
        "version_id": "{{ event.payload.version_id or '' }}",
    }
    local = _initialize_deployment_triggers("local", copy.deepcopy(d[("ingest-file", "local")]["triggers"]))
    assert local[0].enabled is False and local[0].parameters == s3[0].parameters
    loaded = _initialize_deployment_triggers("daily", copy.deepcopy(d[("analytics", "daily")]["triggers"]))
    assert isinstance(loaded[0], CompoundTrigger) and loaded[0].require == "all"
    assert {t.match.get("prefect.resource.id")[0] for t in loaded[0].triggers} == {
        "sluice.dataset.orders", "sluice.dataset.reviews", "sluice.dataset.shipment_deliveries",
    }  # fmt: skip


def test_parameter_schemas_describe_every_field_for_the_ui_form() -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    for entrypoint in set(EXPECTED.values()):
        schema = parameter_schema(load_flow_from_entrypoint(str(ROOT / entrypoint)).fn).model_dump()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{entrypoint}: parameter {name} has no description"
    ingest = parameter_schema(
        load_flow_from_entrypoint(str(ROOT / "flows/ingest.py:ingest_file")).fn
    ).model_dump()
    assert ingest["required"] == ["source"]
    assert set(ingest["properties"]) == {"source", "dataset", "mode", "force", "version_id"}


def test_every_flow_has_a_timeout_and_a_run_name_that_says_what_ran() -> None:
    from prefect.flows import load_flow_from_entrypoint

    for entrypoint in set(EXPECTED.values()):
        flow = load_flow_from_entrypoint(str(ROOT / entrypoint))
        assert flow.timeout_seconds and flow.timeout_seconds <= 4 * 3600, entrypoint
        assert flow.flow_run_name is not None, entrypoint


# --- the webhook --------------------------------------------------------------------------------------------


def sample_body() -> dict[str, Any]:
    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} is not here")
    return json.loads(SAMPLE.read_text())


def render(template: str, context: dict[str, Any]) -> str:
    from prefect.server.utilities.user_templates import render_user_template

    return asyncio.run(render_user_template(template, context))


def webhook_event(body: dict[str, Any]) -> Any:
    """What Prefect Cloud makes of the request: the template rendered over the parsed body, as a received event."""
    from prefect.server.events.schemas.events import ReceivedEvent

    rendered = json.loads(
        render((ROOT / "deployments" / "webhook-template.json").read_text(), {"body": body, "headers": {}})
    )
    return ReceivedEvent(id=uuid.uuid4(), occurred="2024-03-01T02:15:07Z", **rendered)


KEYS = [
    "tm/dailycheckins/2024/03/01/dailycheckins.csv",
    "tm/dailycheckins/with space/daily checkins (1).csv",
    "tm/dailycheckins/ünïcödé/チェックイン.csv",
    'tm/dailycheckins/it\'s "quoted".csv',
    "tm/dailycheckins/plus+sign%20encoded.csv",
    "tm/dailycheckins/{{ not a template }}.csv",
]


@pytest.mark.parametrize("key", KEYS)
def test_webhook_event_matches_the_trigger_and_renders_bucket_and_key(key: str) -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.server.events.schemas.automations import EventTrigger as ServerEventTrigger

    body = sample_body()
    body["detail"]["object"]["key"] = key
    event = webhook_event(body)
    assert event.event == "aws.s3.object.created"
    assert event.resource.id == "s3.bucket.sluice-landing"
    assert event.payload["key"] == key and event.payload["bucket"] == "sluice-landing"
    assert {"size", "etag", "sequencer", "version_id"} <= set(event.payload)

    spec = deployments()[("ingest-file", "s3-event")]["triggers"]
    trigger = _initialize_deployment_triggers("s3-event", copy.deepcopy(spec))[0]
    server_trigger = ServerEventTrigger(
        **trigger.model_dump(
            include={
                "match",
                "match_related",
                "after",
                "expect",
                "for_each",
                "posture",
                "threshold",
                "within",
            }
        )
    )
    assert server_trigger.covers(event)
    source = render(trigger.parameters["source"], {"event": event})
    assert source == f"s3://sluice-landing/{key}"
    version = render(trigger.parameters["version_id"], {"event": event})
    assert version == (body["detail"]["object"].get("version-id") or "")


def test_an_unversioned_object_renders_an_empty_version_id() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    body = sample_body()
    body["detail"]["object"].pop("version-id", None)
    event = webhook_event(body)
    assert event.payload["version_id"] is None
    spec = deployments()[("ingest-file", "s3-event")]["triggers"]
    trigger = _initialize_deployment_triggers("s3-event", copy.deepcopy(spec))[0]
    assert render(trigger.parameters["version_id"], {"event": event}) == ""


def test_trigger_ignores_other_buckets_and_other_events() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.server.events.schemas.automations import EventTrigger as ServerEventTrigger

    trigger = _initialize_deployment_triggers(
        "s3-event", copy.deepcopy(deployments()[("ingest-file", "s3-event")]["triggers"])
    )[0]
    server_trigger = ServerEventTrigger(
        **trigger.model_dump(
            include={
                "match",
                "match_related",
                "after",
                "expect",
                "for_each",
                "posture",
                "threshold",
                "within",
            }
        )
    )
    body = sample_body()
    body["detail"]["bucket"]["name"] = "someone-elses-bucket"
    assert not server_trigger.covers(webhook_event(body))
    other = webhook_event(sample_body()).model_copy(update={"event": "aws.s3.object.deleted"})
    assert not server_trigger.covers(other)
