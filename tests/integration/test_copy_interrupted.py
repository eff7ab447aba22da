"""A COPY whose connection the server ends midway (a stop, a restart, a failover; here pg_terminate_backend, as
PostgreSQL's own shutdown does it): one exception for the caller, nothing printed behind its back."""

from __future__ import annotations

import io
import time

import psycopg2
import pytest
import sqlalchemy as sa

from sluice.adapters.warehouse import get_engine, raw_connection, run_copy


class _CutMidway(io.RawIOBase):
    """CSV rows for COPY FROM STDIN; on the third read, the server ends the loading connection first."""

    def __init__(self, engine: sa.Engine, backend: int) -> None:
        self.engine, self.backend, self.reads = engine, backend, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 3:
            with self.engine.connect() as other:
                assert other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": self.backend}).scalar()
            time.sleep(0.5)  # the backend is gone before the next rows are sent
        if self.reads > 50:
            return b""
        return b"".join(
            b"%d,xxxxxxxxxxxxxxxxxxxx\n" % k for k in range(self.reads * 1000, self.reads * 1000 + 1000)
        )


@pytest.mark.usefixtures("sluice_env")
def test_a_copy_whose_connection_the_server_ends_raises_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # psycopg2 printed "psycopg2.errors.AdminShutdown: terminating connection due to administrator command", then
    # "SystemError: <function decode ...> returned a result with an exception set", bare, on stderr: a command's
    # one error line came with six more (tests/local/test_interrupts.py, `services stop` during a load).
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(
            sa.text("DROP TABLE IF EXISTS public.copy_cut; CREATE TABLE public.copy_cut (k bigint, v text)")
        )
    with engine.connect() as conn:
        backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with pytest.raises(psycopg2.OperationalError), raw_connection(conn) as cursor:
            run_copy(
                cursor,
                "COPY public.copy_cut (k, v) FROM STDIN WITH (FORMAT csv)",
                _CutMidway(engine, backend),
            )
        conn.invalidate()  # the connection is gone: nothing to roll back
    _, err = capfd.readouterr()
    assert "AdminShutdown" not in err and "SystemError" not in err, err
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM public.copy_cut")).scalar_one() == 0
        conn.execute(sa.text("DROP TABLE public.copy_cut"))
