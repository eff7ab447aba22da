"""What a ledger state records when its run stopped: the reason says what stopped it, not an empty exception's
type (a Ctrl-C was recorded as "KeyboardInterrupt")."""

from sluice.ledger_entry import CTRL_C
from tasks.toolkit import reason


def test_a_ctrl_c_is_recorded_as_what_it_was_and_what_to_do() -> None:
    assert reason(KeyboardInterrupt()) == CTRL_C
    assert CTRL_C.startswith("interrupted by Ctrl-C (SIGINT)") and "run the same command again" in CTRL_C


def test_any_other_error_is_recorded_by_its_text() -> None:
    assert reason(ValueError("bad row")) == "bad row"
    assert reason(RuntimeError()) == "RuntimeError"
