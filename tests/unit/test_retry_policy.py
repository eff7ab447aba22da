"""I/O tasks retry transient faults, never a user's bad input."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from sluice.errors import BadFile, SourceNotFound, ValidationFailed
from tasks.toolkit import retry_unless_user_error


@pytest.mark.parametrize("exc", [ConnectionError("reset"), TimeoutError("slow"), OSError("broken pipe")])
def test_transient_faults_are_retried(exc: Exception) -> None:
    assert retry_unless_user_error(None, None, Failed(data=exc)) is True


@pytest.mark.parametrize("exc", [BadFile("x"), SourceNotFound("x"), ValidationFailed("x")])
def test_user_errors_are_not_retried(exc: Exception) -> None:
    assert retry_unless_user_error(None, None, Failed(data=exc)) is False


@pytest.mark.parametrize("code", ["AccessDenied", "NoSuchKey", "NoSuchBucket", "InvalidAccessKeyId"])
def test_aws_refusals_are_not_retried(code: str) -> None:
    """A missing permission or object stays missing: three retries with back-off only delay the alert."""
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "no"}}, "GetObject")
    assert retry_unless_user_error(None, None, Failed(data=exc)) is False


def test_missing_aws_credentials_are_not_retried() -> None:
    """No credentials now, none after a back-off: was three retries (about 14 s) before the same error."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    for exc in (
        NoCredentialsError(),
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
    ):
        assert retry_unless_user_error(None, None, Failed(data=exc)) is False


@pytest.mark.parametrize("code", ["SlowDown", "InternalError", "RequestTimeout", "ThrottlingException"])
def test_aws_throttling_and_server_faults_are_retried(code: str) -> None:
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "later"}}, "PutObject")
    assert retry_unless_user_error(None, None, Failed(data=exc)) is True


def test_a_postgres_privilege_error_is_not_retried(pg_url: str) -> None:
    """A real refusal from PostgreSQL (a role without rights on the table), as SQLAlchemy raises it."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:  # one transaction, rolled back: the role and table never persist
            conn.execute(sa.text("CREATE TEMP TABLE secret (x int)"))
            conn.execute(sa.text("CREATE ROLE sluice_nobody"))
            conn.execute(sa.text("SET LOCAL ROLE sluice_nobody"))
            with pytest.raises(sa.exc.ProgrammingError) as refused:
                conn.execute(sa.text("SELECT * FROM secret"))
            conn.rollback()
    finally:
        engine.dispose()
    assert getattr(refused.value.orig, "pgcode", None) == "42501"
    assert retry_unless_user_error(None, None, Failed(data=refused.value)) is False


def test_success_is_not_retried() -> None:
    assert retry_unless_user_error(None, None, Completed(data=1)) is False


@pytest.mark.usefixtures("prefect_harness")
def test_io_tasks_take_the_configured_retry_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One policy, the configured one: SLUICE_RETRIES=1 means two attempts, whatever the task says."""
    from prefect import flow

    from sluice.settings import reload_settings
    from tasks.toolkit import io_task

    monkeypatch.setenv("SLUICE_RETRIES", "1")
    monkeypatch.setenv("SLUICE_RETRY_DELAY_SECONDS", "0")
    reload_settings()
    attempts: list[int] = []

    @io_task
    def flaky() -> None:
        attempts.append(1)
        raise ConnectionError("reset")

    @flow
    def run() -> None:
        flaky()

    with pytest.raises(ConnectionError):
        run()
    monkeypatch.undo()
    reload_settings()
    assert len(attempts) == 2
