"""The exit hook removes only what this process started: never a parent's environments from a fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from awm.runtime import reaper

    marks = Path(sys.argv[1])
    reaper.track("env-1", lambda: (marks / f"removed-by-{os.getpid()}").touch())
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a normal interpreter exit: atexit hooks run in the child
    os.waitpid(child, 0)
    print(parent)
    """
)


def test_a_forked_child_does_not_remove_its_parents_environments(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60, check=True
    )
    parent = done.stdout.strip()
    # only the parent's own exit removed the environment
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"removed-by-{parent}"]
