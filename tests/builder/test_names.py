from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from awm.core.naming import normalise


def test_examples() -> None:
    assert normalise("DoorDash Drive (Delivery Tracking)") == "doordash_drive_delivery_tracking"
    assert normalise("SurveyMonkey Apply") == "surveymonkey_apply"
    assert normalise("__A--b__") == "a_b"
    assert normalise("already_normal_1") == "already_normal_1"
    assert normalise("Café Ümlaut") == "caf_mlaut"


@given(st.text())
def test_normalised_form(name: str) -> None:
    out = normalise(name)
    assert re.fullmatch(r"([a-z0-9]+(_[a-z0-9]+)*)?", out), out
    assert normalise(out) == out  # idempotent


@given(st.text())
def test_agrees_with_the_rule_written_out(name: str) -> None:
    chars = [c if ("a" <= c <= "z" or "0" <= c <= "9" or c == "_") else "_" for c in name.lower()]
    collapsed = re.sub("_+", "_", "".join(chars))
    assert normalise(name) == collapsed.strip("_")


@given(st.text(alphabet=st.characters(codec="ascii")))
def test_case_and_separators_do_not_matter(name: str) -> None:
    assert normalise(name.upper()) == normalise(name.lower())
    assert normalise(name.replace(" ", "-")) == normalise(name.replace(" ", "_"))
