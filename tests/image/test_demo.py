from __future__ import annotations

import pytest
from typer.testing import CliRunner

from awm.cli import app
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker


def test_demo_builds_starts_replays_grades_and_resets(example_images: dict[str, object]) -> None:
    args = ["demo", str(EXAMPLES), "--scenario", "trailhead_campground_reservations", "--task", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "   verify before acting: others" in lines
    assert any(line.startswith("5. verify after the reference solution: complete (reward 1.0") for line in lines)
    assert "   verify after reset: others" in lines
    assert "7. container removed" in lines
