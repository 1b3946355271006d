"""bench/k8s_capacity.py: the on-paper numbers come from the measured results and the stated figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.k8s.conftest import ROOT


def test_capacity_rows_follow_from_their_inputs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("k8s_capacity", ROOT / "bench" / "k8s_capacity.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "capacity.json"
    assert module.main(["--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {(r["episodes"], r["strategy"].split(" (")[0]): r for r in doc["rows"]}
    assert len(rows) == 8
    mib = doc["measured"]["idle_memory_mib"]
    for episodes in (1_000, 10_000):
        pool = rows[(episodes, "pool, reset in place")]
        claims = rows[(episodes, "agent-sandbox claim per episode")]
        assert pool["pods"] == episodes
        assert pool["api_writes_per_episode"] == 0
        assert claims["api_writes_per_episode"] == 23
        assert claims["api_writes_per_s"] == round(23 * episodes / doc["assumptions"]["episode_s"], 1)
        assert pool["memory_used_gib"] == round(episodes * mib / 1024, 1)
        assert pool["nodes_at_110_pods"] == -(-episodes // 110)
