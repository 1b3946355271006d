"""The scenario stage at scale: 60 scenarios from 10 seeds against a server that repeats itself.

The scripted server makes its replies on the fly: each generation request gets the number of
candidates it asks for, in its focus category, among them exact repeats of earlier candidates,
near-duplicates (a seed's description with three words changed) and candidates that claim
one category whatever the focus (to fill it up). Concurrency is shown by the server: it holds a
request until a second one is in flight, and records the most it held at once.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from awm.builder.synth.scenario import CLASSIFY_TITLE, TITLE
from awm.cli import app
from awm.core.naming import normalise
from tests.builder.synth.scripted import ScriptedLLM

runner = CliRunner()
CATEGORIES = ("retail", "health", "travel", "finance")
UNSUITABLE = "Seed Zero Screensaver"


def description(tag: str) -> str:
    """60 words of its own, so that unrelated scenarios are far apart in the server's embedding."""
    return " ".join(f"{tag}w{j}" for j in range(60))


def fenced(value: Any) -> str:
    return "```json\n" + json.dumps(value) + "\n```"


class Generator:
    """Replies of a model that proposes new scenarios, with repeats and near-duplicates mixed in."""

    def __init__(self, server: ScriptedLLM) -> None:
        self.server = server
        self.made: list[dict[str, str]] = []
        self.count = 0
        self.lock = threading.Lock()
        self.example_lists: list[str] = []

    def __call__(self, body: dict[str, Any]) -> str | None:
        user = body["messages"][1]["content"]
        if user.startswith(f"# {CLASSIFY_TITLE}"):
            names = re.findall(r"^- \*\*(.+?)\*\*", user, re.M)
            return fenced({"seeds": [{"name": n, "category": CATEGORIES[i % 4],
                                      "suitability_score": 2 if n == UNSUITABLE else 9} for i, n in enumerate(names)]})
        assert user.startswith(f"# {TITLE}")
        self.server.wait_for_company()
        want = int(re.search(r"Propose (\d+) NEW", user).group(1))  # type: ignore[union-attr]
        focus = re.search(r"Focus category: \*\*(.+?)\*\*", user).group(1)  # type: ignore[union-attr]
        self.example_lists.append(user.split("## Example scenarios", 1)[1].split("## Names taken", 1)[0])
        out = []
        with self.lock:
            for _ in range(want):
                self.count += 1
                k = self.count
                if k % 4 == 0 and self.made:  # an exact repeat
                    out.append(self.made[k % len(self.made)])
                    continue
                if k % 5 == 0:  # a near-duplicate of a seed: another name, nearly the same description
                    words = description(f"s{1 + k % 9}").split()
                    words[:3] = [f"near{k}a", f"near{k}b", f"near{k}c"]
                    out.append({"name": f"Nearby Clone {k}", "description": " ".join(words), "category": focus})
                    continue
                category = "retail" if k % 3 == 0 else focus  # claims retail whatever the focus
                cand = {"name": f"Novel Venture {k}", "description": description(f"v{k}"), "category": category}
                self.made.append(cand)
                out.append(cand)
        return fenced({"scenarios": out})


def seeds_file(tmp_path: Path) -> Path:
    names = [UNSUITABLE] + [f"Seed Domain {i}" for i in range(1, 10)]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"name": n, "description": description(f"s{i}")}) + "\n"
                            for i, n in enumerate(names)))
    return path


def gen(server: ScriptedLLM, seeds: Path, out: Path) -> Any:
    return runner.invoke(app, ["gen", "scenario", "--input_path", str(seeds), "--output_path", str(out),
                               "--target_count", "60", "--model", "scripted", "--base-url", server.url,
                               "--embedding-model", "scripted-embed", "--concurrency", "4", "--no-cache", "--json"],
                         env={"AWM_LLM_API_KEY": "k", "COLUMNS": "200"})


def test_sixty_scenarios_from_ten_seeds(tmp_path: Path) -> None:
    server = ScriptedLLM([]).start()
    try:
        generator = Generator(server)
        server.responder = generator
        out = tmp_path / "gen_scenario.jsonl"
        result = gen(server, seeds_file(tmp_path), out)
        assert result.exit_code == 0, result.output
        report = json.loads(result.output[result.output.index("{"):])
    finally:
        server.stop()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 60
    assert len({normalise(r["name"]) for r in rows}) == 60
    reasons = [r["reason"] for r in report["rejected"]]
    assert any(r == "the same id as a scenario already taken" for r in reasons)  # exact repeats
    assert any(r.startswith("embedding too close to 'Seed Domain") for r in reasons)  # near-duplicates
    assert not any(r["name"].startswith("Nearby Clone") for r in rows)
    assert report["duplicate_rate"] > 0.2
    # category caps: ceil(1.5 * 50 / 4) = 19 new scenarios per category at most, and retail reached it
    categories = Counter(r["categories"][0] for r in rows if r["name"].startswith("Novel"))
    assert max(categories.values()) <= 19
    assert categories["retail"] == 19
    assert report["categories"] == dict(sorted(categories.items()))
    assert any("'retail' already holds its cap of 19" in r for r in reasons)
    # requests ran concurrently (seen by the server), and few-shot examples came from suitable seeds only
    assert server.max_in_flight >= 2
    assert generator.example_lists
    assert not any(UNSUITABLE in e for e in generator.example_lists)
    assert report["stop_reason"] == "target reached"


def test_a_model_that_only_repeats_itself_stops_on_stall(tmp_path: Path) -> None:
    server = ScriptedLLM([]).start()
    same = [{"name": f"Only Idea {i}", "description": description(f"o{i}"), "category": "retail"} for i in range(3)]

    def repeat(body: dict[str, Any]) -> str:
        user = body["messages"][1]["content"]
        if user.startswith(f"# {CLASSIFY_TITLE}"):
            names = re.findall(r"^- \*\*(.+?)\*\*", user, re.M)
            return fenced({"seeds": [{"name": n, "category": "retail", "suitability_score": 8} for n in names]})
        return fenced({"scenarios": same})

    server.responder = repeat
    try:
        out = tmp_path / "gen_scenario.jsonl"
        result = gen(server, seeds_file(tmp_path), out)
        chats = len(server.chats())
    finally:
        server.stop()
    assert result.exit_code == 1
    report = json.loads(result.output[result.output.index("{"):result.output.rindex("}") + 1])
    assert report["stop_reason"].startswith("stalled: 2 round(s) in a row accepted no new scenario")
    assert "3 of 50 new scenarios accepted" in report["error"]
    assert chats < 20  # it stopped, far below the request budget
    assert len(out.read_text().splitlines()) == 13  # what it made is written: the seeds and 3 new
