"""The stages before the environment (no Docker): scenarios, tasks, schema, rows, spec.

Runs the pipeline against the scripted server and checks the faults of the fixtures: each
triggers a retry whose request carries the error, and the state resumes without asking again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from awm.builder.synth import GenOptions, generate
from awm.builder.synth.base import Stage
from awm.builder.synth.dedupe import description_similarity, lexical_duplicate, name_overlap, words
from awm.builder.synth.dialogue import FEEDBACK_HEADER
from awm.builder.synth.scenario import load_seeds
from awm.builder.synth.state import OutputFolder
from awm.core.errors import SynthesisError
from tests.builder.synth.conftest import make_llm
from tests.builder.synth.scripted import FIXTURES, ScriptedLLM

SEEDS = FIXTURES / "seeds.jsonl"
EARLY: tuple[Stage, ...] = ("scenario", "task", "db", "sample", "spec")
PANTRY, CAMP = "pantry_pilot_meal_planner", "campfire_site_reservations"


def options(**kw: Any) -> GenOptions:
    # error_threshold 0: the fixtures' faulty inserts are fed back (the feedback loop is under test)
    return GenOptions(**{"scenarios": 2, "tasks": 6, "error_threshold": 0.0, **kw})


def feedback_of(server: ScriptedLLM, fixture_id: str) -> str:
    """The feedback message of the request that got reply `fixture_id`."""
    request = next(r for r in server.chats() if r["entry"] == fixture_id)
    message = request["body"]["messages"][-1]["content"]
    assert message.startswith(FEEDBACK_HEADER)
    return str(message)


def test_early_stages_retry_each_fault_with_its_error(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = generate(out, stages=EARLY, llm=make_llm(llm_server), options=options(), seeds=SEEDS)

    assert [s.id for s in report.scenarios] == [PANTRY, CAMP]
    assert all(set(s.stages.values()) == {"done"} for s in report.scenarios)
    assert report.rejected_scenarios[0].name == "Acme Support Desk (Helpdesk Tickets)"
    assert "name too close to 'Acme Helpdesk (Support Tickets)'" in report.rejected_scenarios[0].reason
    assert sorted(llm_server.replied()) == sorted(
        ["scenario-1", "scenario-2"]
        + [f"{PANTRY}-{s}" for s in ("task-1", "task-2", "db-1", "db-2", "sample-1", "spec-1")]
        + [f"{CAMP}-{s}" for s in ("task-1", "db-1", "sample-1", "sample-2", "spec-1")]
    )
    # the retry carries the rejected reply and what was wrong with it
    task_feedback = feedback_of(llm_server, f"{PANTRY}-task-2")
    assert "the JSON does not parse: Expecting ',' delimiter at line 4 column 5" in task_feedback
    assert "ddl of table 'recipes' failed: near \")\": syntax error: CREATE TABLE recipes (" in feedback_of(
        llm_server, f"{PANTRY}-db-2")
    assert ("insert of table 'reviews' failed: FOREIGN KEY constraint failed: INSERT INTO reviews (id, user_id, "
            "campsite_id, reservation_id, rating, title, comment, created_at) VALUES (17, 3, 300, 21"
            in feedback_of(llm_server, f"{CAMP}-sample-2"))
    state = OutputFolder(out).load_stage(PANTRY, "db")
    assert state is not None
    assert [bool(a.problems) for a in state.attempts[""]] == [True, False]

    # The dataset files hold what is done; a second run asks nothing and changes nothing.
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert sorted(files) == ["gen_db.jsonl", "gen_sample.jsonl", "gen_scenario.jsonl", "gen_spec.jsonl",
                             "gen_tasks.jsonl"]
    llm_server.clear()
    again = generate(out, stages=EARLY, llm=make_llm(llm_server), options=options(), seeds=SEEDS)
    assert llm_server.requests == []
    assert again.scenario_stage == "skipped"
    assert all(set(s.stages.values()) == {"skipped"} for s in again.scenarios)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def test_stage_commands_resume_from_the_state_without_a_cache(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate(out, stages=("scenario", "task"), llm=make_llm(llm_server), options=options(), seeds=SEEDS)
    llm_server.clear()
    report = generate(out, stages=("task", "db"), llm=make_llm(llm_server), options=options())
    assert {s.stages["task"] for s in report.scenarios} == {"skipped"}
    assert {e.split("-")[-2] for e in llm_server.replied()} == {"db"}
    # A stage's options are among its inputs: another number of tasks redoes the task stage.
    # (The fixtures reply 6 tasks, which is fed back, and have no reply to that feedback: the
    # redo fails, and the good result stays.)
    llm_server.clear()
    tasks_before = (out / "gen_tasks.jsonl").read_bytes()
    report = generate(out, stages=("task",), llm=make_llm(llm_server), options=options(tasks=5))
    assert "Write exactly 5 tasks" in llm_server.chats()[0]["body"]["messages"][1]["content"]
    assert sum("there are 6 tasks; exactly 5 are needed" in r["body"]["messages"][-1]["content"]
               for r in llm_server.retries()) == 2
    assert {s.stages["task"] for s in report.scenarios} == {"failed"}
    assert "HTTP 400: no scripted reply for this request" in (report.scenarios[0].error or "")
    assert (out / "gen_tasks.jsonl").read_bytes() == tasks_before
    folder = OutputFolder(out)
    assert folder.load_stage(PANTRY, "task") is not None
    assert folder.load_failure(PANTRY, "task") is not None


def test_a_failing_scenario_does_not_stop_the_batch(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = generate(out, stages=("scenario", "task", "db"), llm=make_llm(llm_server), options=options(attempts=1),
                      seeds=SEEDS)
    pantry, camp = report.scenarios
    assert pantry.stages == {"task": "failed"}
    assert pantry.error == (f"scenario '{PANTRY}', stage task: no acceptable reply in 1 attempt(s); last problems: "
                            "the JSON does not parse: Expecting ',' delimiter at line 4 column 5 (near: \"Move my "
                            "Thai Green Curry Chicken dinner from Wednesday, March 12, 2025 to Friday, March 14, "
                            "2025 (still as dinner) and )")
    assert camp.stages == {"task": "done", "db": "done"}
    assert camp.error is None
    tasks = [json.loads(line) for line in (out / "gen_tasks.jsonl").read_text().splitlines()]
    assert [t["scenario"] for t in tasks] == ["Campfire Site Reservations"]
    assert report.failed == [pantry]
    saved = json.loads((out / ".awm-gen" / "report.json").read_text())
    assert saved["scenarios"][0]["error"] == pantry.error


def test_near_duplicates_by_embedding(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    llm = make_llm(llm_server, embedding_model="scripted-embed")
    report = generate(tmp_path / "out", stages=("scenario",), llm=llm, options=options(), seeds=SEEDS)
    assert [r.name for r in report.rejected_scenarios] == ["Acme Support Desk (Helpdesk Tickets)"]
    assert report.rejected_scenarios[0].reason.startswith("embedding too close to 'Acme Helpdesk (Support Tickets)'")
    embeddings = [r for r in llm_server.requests if r["path"].endswith("/embeddings")]
    assert [len(r["body"]["input"]) for r in embeddings] == [2, 2, 1]  # the seeds, then each reply's candidates
    assert report.llm["scenario"]["requests"] == 5


def test_lexical_rule() -> None:
    assert words("The Reservations of Campsites online") == ["reservation", "campsite"]
    assert name_overlap("PantryPal Meal Planner", "PantryPal Recipe Planner") == 0.5
    assert name_overlap("Bug Tracker", "Habit Tracker") == 1 / 3
    taken = [("Acme Helpdesk (Support Tickets)", "A support desk where agents answer customer tickets.")]
    same = "same id as 'Acme Helpdesk (Support Tickets)'"
    assert lexical_duplicate("acme helpdesk support tickets", "", taken) == same
    assert lexical_duplicate("Orchard Harvest Planner", "Farmers plan harvests of apple trees.", taken) is None
    reworded = "A support desk where agents answer the tickets of customers."
    assert description_similarity(reworded, taken[0][1]) >= 0.6
    assert (lexical_duplicate("Helpline Board", reworded, taken) or "").startswith("description too close")


def test_seed_lists(tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("# my domains\nOrchard Planner\n\nDive Log\n")
    assert [s.name for s in load_seeds(tmp_path / "names.txt")] == ["Orchard Planner", "Dive Log"]
    (tmp_path / "seeds.json").write_text(json.dumps({"scenarios": [{"name": "A", "description": "d"}]}))
    assert load_seeds(tmp_path / "seeds.json")[0].description == "d"
    (tmp_path / "bad.jsonl").write_text('{"name": "A"}\n{"description": "no name"}\n')
    with pytest.raises(SynthesisError, match=r"bad.jsonl:2: a seed needs a `name`"):
        load_seeds(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(SynthesisError, match="holds no scenario"):
        load_seeds(tmp_path / "empty.txt")


def test_keep_seeds_generates_for_the_seeds_too(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    report = generate(tmp_path / "out", stages=("scenario",), llm=make_llm(llm_server),
                      options=options(scenarios=0, keep_seeds=True), seeds=SEEDS)
    assert llm_server.requests == []
    assert [s.id for s in report.scenarios] == ["acme_helpdesk_support_tickets", "riverside_library_loans_and_holds"]


def test_inputs_and_foreign_datasets_are_never_overwritten(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    with pytest.raises(SynthesisError, match="already holds a dataset that `awm gen` did not write"):
        generate(examples, stages=("scenario",), llm=make_llm(llm_server), seeds=SEEDS)
    out = tmp_path / "out"
    out.mkdir()
    seeds = out / "gen_scenario.jsonl"
    seeds.write_bytes(SEEDS.read_bytes())
    (out / ".awm-gen").mkdir()
    with pytest.raises(SynthesisError, match="is an input, and `awm gen` would overwrite it"):
        generate(out, stages=("scenario",), llm=make_llm(llm_server), seeds=seeds)
    assert seeds.read_bytes() == SEEDS.read_bytes()
    assert not (examples / ".awm-gen").exists()
