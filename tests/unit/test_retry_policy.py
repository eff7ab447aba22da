"""I/O tasks retry transient faults, never a user's bad input."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from sluice.errors import BadFile, SourceNotFound, ValidationFailed
from tasks.ingest import retry_unless_user_error


@pytest.mark.parametrize("exc", [ConnectionError("reset"), TimeoutError("slow"), OSError("broken pipe")])
def test_transient_faults_are_retried(exc: Exception) -> None:
    assert retry_unless_user_error(None, None, Failed(data=exc)) is True


@pytest.mark.parametrize("exc", [BadFile("x"), SourceNotFound("x"), ValidationFailed("x")])
def test_user_errors_are_not_retried(exc: Exception) -> None:
    assert retry_unless_user_error(None, None, Failed(data=exc)) is False


def test_success_is_not_retried() -> None:
    assert retry_unless_user_error(None, None, Completed(data=1)) is False
