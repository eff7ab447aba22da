"""A database error said in one line (``sluice.errors.database_error``), on exceptions as the driver raises them."""

from __future__ import annotations

import psycopg2.errors
import pytest
import sqlalchemy as sa

from sluice.errors import ConfigurationError, described


def wrapped(driver_error: Exception) -> sa.exc.DBAPIError:
    """As SQLAlchemy raises a driver's error out of ``execute``."""
    return sa.exc.DBAPIError.instance("SELECT 1", {}, driver_error, psycopg2.Error)


def test_a_lost_connection_says_the_warehouse_and_keeps_the_hint_on_one_line() -> None:
    error = wrapped(
        psycopg2.OperationalError(
            'connection to server at "db", port 5432 failed: Connection refused\n'
            "\tIs the server running on that host and accepting TCP/IP connections?\n"
        )
    )
    assert isinstance(error, sa.exc.OperationalError)
    assert described(error) == (
        'cannot connect to the warehouse: connection to server at "db", port 5432 failed: Connection refused '
        "Is the server running on that host and accepting TCP/IP connections?"
    )


def test_another_driver_error_names_its_class_not_a_connection() -> None:
    """A deadlock is an OperationalError too: it is not said as a connection failure."""
    error = wrapped(
        psycopg2.errors.DeadlockDetected("deadlock detected\nDETAIL:  Process 1 waits for ShareLock\n")
    )
    assert described(error) == "DeadlockDetected: deadlock detected DETAIL:  Process 1 waits for ShareLock"
    assert "sqlalche.me" not in described(error) and "SELECT 1" not in described(error)


def test_an_error_raised_from_none_is_said_as_it_is() -> None:
    """The Totesys source wraps its connection errors ``from None`` in its own line, which names the source."""
    with pytest.raises(ConfigurationError) as caught:
        try:
            raise wrapped(psycopg2.OperationalError('connection to server at "oltp" failed'))
        except sa.exc.OperationalError:
            raise ConfigurationError("the Totesys source oltp refused the connection") from None
    assert described(caught.value) == "the Totesys source oltp refused the connection"


def test_anything_else_is_its_text_or_its_type() -> None:
    assert described(KeyError("x")) == "'x'"
    assert described(RuntimeError()) == "RuntimeError"


def test_the_warehouse_disk_full_is_said_whatever_came_after_it() -> None:
    """PostgreSQL stops when its disk is full: the COPY's DiskFull (which psycopg2 wraps in a SystemError) is
    followed by a failed rollback and a failed reconnect, and the last of those was said: "cannot connect"."""
    disk_full = psycopg2.errors.DiskFull(
        'could not write to file "pg_wal/xlogtemp.1": No space left on device\nCONTEXT:  COPY daily_checkins\n'
    )
    with pytest.raises(sa.exc.DBAPIError) as caught:
        try:
            try:
                raise SystemError("<function decode> returned a result with an exception set") from disk_full
            except SystemError:
                raise wrapped(psycopg2.InterfaceError("connection already closed")) from None
        except sa.exc.DBAPIError:
            raise wrapped(psycopg2.OperationalError("server closed the connection unexpectedly")) from None
    assert "disk is full" not in described(caught.value)  # `from None` said what matters: as for other errors

    with pytest.raises(sa.exc.DBAPIError) as caught:
        try:
            try:
                raise SystemError("<function decode> returned a result with an exception set") from disk_full
            except SystemError:
                raise wrapped(psycopg2.InterfaceError("connection already closed"))  # noqa: B904 (as SQLAlchemy does)
        except sa.exc.DBAPIError:
            raise wrapped(psycopg2.OperationalError("server closed the connection unexpectedly"))  # noqa: B904
    assert described(caught.value) == (
        'the warehouse\'s disk is full: could not write to file "pg_wal/xlogtemp.1": No space left on device '
        "CONTEXT:  COPY daily_checkins"
    )
