"""A real `awm build` killed with SIGKILL mid-way leaves a valid report; the rerun resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import docker
import pytest

from awm.core.labels import LABEL_OWNER, Owner
from tests.builder.build.conftest import make_variants

pytestmark = pytest.mark.docker

AWM = str(Path(sys.executable).parent / "awm")


def _report(path: Path) -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def test_killed_build_resumes_where_it_stopped(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str], base_image: str
) -> None:
    own_images("t4_resume_")
    root = tmp_path / "dataset"
    ids = make_variants(root, 8, "t4 resume")
    report_path = tmp_path / "report.json"
    argv = [AWM, "build", str(root), "--jobs", "1", "--no-smoke", "--report", str(report_path)]

    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = cast(IO[bytes], proc.stderr)  # a pipe: stderr=PIPE
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            report = _report(report_path)
            if report and any(r["status"] == "built" for r in report["results"]):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the build ended before it could be killed: {stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    killed = _report(report_path)  # the file is whole: written to a temporary file, then renamed
    assert killed is not None
    assert killed["complete"] is False
    assert killed["finished_at"] is None
    done_before = {r["scenario"] for r in killed["results"] if r["status"] == "built"}
    assert done_before
    assert done_before < set(ids)
    assert killed["counts"]["pending"] == len(ids) - len(killed["results"])
    for sid in done_before:  # what the report says was built is built, under its digest tag
        entry = next(r for r in killed["results"] if r["scenario"] == sid)
        assert docker_client.images.get(entry["tag"]).id == entry["image_id"]

    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming an interrupted build" in rerun.stderr
    final = _report(report_path)
    assert final is not None
    assert final["complete"] is True
    assert final["resumed"] is True
    assert final["previous"]["built"] == len(done_before)
    status = {r["scenario"]: r["status"] for r in final["results"]}
    assert sorted(status) == sorted(ids)
    assert {s for s, st in status.items() if st == "cached"} >= done_before
    assert all(st in ("built", "cached") for st in status.values())
    for sid in ids:
        assert docker_client.images.get(f"awm/{sid}:latest").labels["awm.scenario"] == sid
    # the killed build's check container, if it had one running, is gone too
    leftovers = [
        c for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_OWNER})
        if (o := Owner.parse(c.labels.get(LABEL_OWNER, ""))) is not None and o.pid == proc.pid and o.is_local()
    ]
    assert leftovers == []
