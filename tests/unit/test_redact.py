"""``redact``: a URL's password hidden in messages, and only a password there is."""

from __future__ import annotations

from sluice.adapters.warehouse import redact


def test_an_empty_password_is_not_shown_as_a_hidden_one() -> None:
    """``sluice db url`` printed ``postgres:***@`` for the embedded server, which has no password."""
    embedded = "postgresql+psycopg2://postgres:@/postgres?host=/home/u/.sluice/pg"
    assert redact(embedded) == "postgresql+psycopg2://postgres:@/postgres?host=%2Fhome%2Fu%2F.sluice%2Fpg"
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_status_url_reads_back_as_the_socket_folder_it_names() -> None:
    """``services status`` printed the embedded server's socket folder raw: a ``%41`` in a home's path read back as
    ``A``, a space broke the URL for psql."""
    import sqlalchemy as sa

    from sluice.services import Postgres

    folder = "/home/u v/100%41/ü/.sluice/pg"
    url = Postgres(pid=1, pgdata=folder, socket_dir=folder).url
    assert " " not in url
    assert sa.make_url(url).query["host"] == folder
