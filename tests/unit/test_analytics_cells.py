"""How `sluice analytics` shows a value: counts as every other command prints them (``27,236``), the rest as is."""

import numpy as np
import pytest

from sluice.cli.data2bots import cell


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1234, "1,234"),
        (np.int64(27236), "27,236"),
        (7, "7"),
        (None, ""),
        (True, "True"),
        (np.bool_(False), "False"),
        (12.5, "12.5"),
        ("2022-09-05", "2022-09-05"),
    ],
)
def test_a_count_has_thousands_separators_and_nothing_else_changes(value: object, shown: str) -> None:
    assert cell(value) == shown
