"""prefect.yaml pinned: deployments, entrypoints, pools, schedules, triggers (Prefect's own models), the UI form;
the webhook template renders real EventBridge bodies into events the trigger matches, with the right parameters."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "samples" / "s3-object-created.eventbridge.json"
EXPECTED = {
    ("ingest-file", "s3-event"): ("flows/ingest.py:ingest_file", "sluice-ecs"),
    ("ingest-file", "local"): ("flows/ingest.py:ingest_file", "sluice-local"),
    ("totesys", "every-20-minutes"): ("flows/totesys.py:totesys", "sluice-ecs"),
    ("totesys", "every-20-minutes-local"): ("flows/totesys.py:totesys", "sluice-local"),
    ("analytics", "daily"): ("flows/analytics.py:analytics", "sluice-ecs"),
    ("analytics", "daily-local"): ("flows/analytics.py:analytics", "sluice-local"),
    ("customers", "daily"): ("flows/customers.py:customers", "sluice-ecs"),
    ("customers", "daily-local"): ("flows/customers.py:customers", "sluice-local"),
}


def config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def deployments() -> dict[tuple[str, str], dict[str, Any]]:
    from prefect.flows import load_flow_from_entrypoint

    out = {}
    for d in config()["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / d["entrypoint"]))
        out[(flow.name, d["name"])] = d
    return out


def test_every_deployment_is_pinned_and_its_entrypoint_loads() -> None:
    found = deployments()
    assert {k: (d["entrypoint"], d["work_pool"]["name"]) for k, d in found.items()} == EXPECTED


def test_build_push_pull_steps() -> None:
    c = config()
    assert not {"build", "push", "pull"} & set(
        c
    )  # per deployment: Prefect runs global push steps for every one
    for (_flow, name), d in deployments().items():
        if d["work_pool"]["name"] == "sluice-local":
            assert "build" not in d and "push" not in d, name
            assert d["pull"] == [
                {
                    "prefect.deployments.steps.set_working_directory": {
                        "directory": "{{ $SLUICE_PROJECT_DIR }}"
                    }
                }
            ]
            continue
        assert d["pull"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect/sluice"}}
        ]
        build = {next(iter(s)): next(iter(s.values())) for s in d["build"]}
        image = build["prefect_docker.deployments.steps.build_docker_image"]
        assert image["platform"] == "linux/amd64" and image["dockerfile"] == "Dockerfile"
        assert image["tag"] == "{{ get-commit-hash.stdout }}"
        assert "git rev-parse" in build["prefect.deployments.steps.run_shell_script"]["script"]
        push = [next(iter(s)) for s in d["push"]]
        assert push == [
            "prefect.deployments.steps.run_shell_script",
            "prefect_docker.deployments.steps.push_docker_image",
        ]
        login = d["push"][0]["prefect.deployments.steps.run_shell_script"]
        assert login["shell"] is True and "ecr get-login-password" in login["script"]


def test_ecs_job_variables_are_accepted_by_prefect_aws() -> None:
    from prefect_aws.workers.ecs_worker import ECSVariables

    for (flow, name), d in deployments().items():
        if d["work_pool"]["name"] != "sluice-ecs":
            continue
        variables = ECSVariables(**d["work_pool"]["job_variables"])
        assert variables.family == "sluice" and variables.match_latest_revision_in_family, (flow, name)
        assert variables.cpu == 1024 and variables.memory == 4096
        assert variables.image == "{{ build-image.image }}"
        assert variables.env["SLUICE_JSON_LOGS"] == "true"
        assert str(variables.task_role_arn).startswith("{{ $SLUICE_TASK_ROLE_ARN")


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
    assert s3[0].parameters == {"source": "s3://{{ event.payload.bucket }}/{{ event.payload.key }}"}
    loaded = _initialize_deployment_triggers("daily", copy.deepcopy(d[("analytics", "daily")]["triggers"]))
    assert isinstance(loaded[0], CompoundTrigger) and loaded[0].require == "all"
    assert {t.match.get("prefect.resource.id")[0] for t in loaded[0].triggers} == {
        "sluice.dataset.orders", "sluice.dataset.reviews", "sluice.dataset.shipment_deliveries",
    }  # fmt: skip


def test_parameter_schemas_describe_every_field_for_the_ui_form() -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    for entrypoint in {e for e, _ in EXPECTED.values()}:
        schema = parameter_schema(load_flow_from_entrypoint(str(ROOT / entrypoint)).fn).model_dump()
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{entrypoint}: parameter {name} has no description"
    ingest = parameter_schema(
        load_flow_from_entrypoint(str(ROOT / "flows/ingest.py:ingest_file")).fn
    ).model_dump()
    assert ingest["required"] == ["source"]
    assert set(ingest["properties"]) == {"source", "dataset", "mode", "force"}


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
    assert {"size", "etag", "sequencer"} <= set(event.payload)

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
