"""``files.write_whole``: the state files of the home's services are whole or absent, never half written."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.files import write_whole


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text("old", encoding="utf-8")
    write_whole(path, '{"port": 4200}')
    assert path.read_text(encoding="utf-8") == '{"port": 4200}'
    assert [p.name for p in tmp_path.iterdir()] == ["server.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "plain-http-ca.pem"
    path.write_text("old", encoding="ascii")
    with pytest.raises(UnicodeEncodeError):  # fails once the partial file is open, as a full disk would
        write_whole(path, "é", encoding="ascii")
    assert path.read_text(encoding="ascii") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plain-http-ca.pem"]
