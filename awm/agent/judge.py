"""`awm verify`: grade a run folder, by the code verifier or by the code-augmented LLM judge.

Verifiers are the dataset's code: they run only inside the scenario image's verifier sandbox,
never on this host. A run folder's `final.db` is graded by ``docker run --rm IMAGE verify
--task-idx N --final-db ...`` (no network, read-only mount); a live environment grades its own
database through `/_awm/verify`. Both are the same function of the image (`grade_databases`).

- code mode: the code verifier's verdict, ``complete`` or ``others``; a verifier that fails is
  ``judge_error``.
- sql mode: the sql verifier returns facts about the databases; an LLM judge reads them with the
  task and the trajectory and classifies the episode as complete, incomplete, server_error or
  agent_error (priority: complete, server_error, agent_error, incomplete). A reply that is not
  the JSON asked for, or names another class, is ``judge_error``.

`reward` maps the class to a number (complete 1.0, everything else 0.0 by default).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import openai
import requests

from awm.agent.llm import LLMConfig
from awm.core.errors import AWMError, ImageNotFound, InvalidInput, VerifierError
from awm.core.files import atomic_write
from awm.core.labels import LABEL_ROLE, owner_labels

__all__ = [
    "JUDGE_CLASSES",
    "JUDGE_PROMPT",
    "Mode",
    "RewardMap",
    "final_answer_of",
    "grade_database",
    "judge_prompt_input",
    "llm_judge",
    "parse_judge_reply",
    "verify_document",
    "verify_run",
]

Mode = Literal["code", "sql"]
# Classes in priority order: when several fit, the first one wins.
JUDGE_CLASSES = ("complete", "server_error", "agent_error", "incomplete")
JUDGE_ERROR = "judge_error"
_ROLE = "verify"
_GRADE_TIMEOUT_S = 120.0

JUDGE_PROMPT = """\
You grade one attempt of an AI agent at a task in a simulated application. The agent worked \
through the application's tools; you get the task, the number of steps it took, its trajectory, \
and facts a program read from the application's database before and after the attempt \
(code_execution_result).

Decide which one class describes the attempt, checking them in this order and taking the first \
that fits:
1. complete: the database facts (and, where the task asks for information, the agent's final \
answer) show that everything the task asked for was done.
2. server_error: the attempt failed because the application itself failed (internal errors, \
crashes, tools that cannot work), not because of the agent.
3. agent_error: the agent caused the failure: wrong tools or arguments, malformed calls, wrong \
records changed, giving up, or a wrong answer.
4. incomplete: the work is only partly done, or the step limit ended it first.
Trust the database facts over the agent's own claims.

Reply with one JSON object and nothing else:
{"reasoning": "<why>", "confidence_score": [<complete>, <incomplete>, <server_error>, <agent_error>], \
"classification": "complete" | "incomplete" | "server_error" | "agent_error", "evidence": \
{"status": "<what the database shows>", "iterations": <steps>, "error_signals": ["..."], \
"last_actions": ["..."], "database_verification": "<what the facts confirm or contradict>"}}
The four confidence scores are numbers between 0 and 1."""


@dataclass(frozen=True)
class RewardMap:
    """The number each outcome class is worth; classes not named are worth `default`."""

    values: Mapping[str, float] = field(default_factory=lambda: {"complete": 1.0})
    default: float = 0.0

    def __call__(self, outcome: str) -> float:
        return float(self.values.get(outcome, self.default))


def grade_database(
    client: docker.DockerClient,
    image: str,
    task_idx: int,
    final_db: Path,
    *,
    final_answer: str | None = None,
    flavour: Mode = "code",
    run_id: str = "verify",
) -> dict[str, Any]:
    """The image's verifier result for a saved database, run in a throwaway sandboxed container.

    Raises:
        ImageNotFound: no such image.
        VerifierError: the verifier could not be run (no such task or verifier, a timeout).
    """
    from awm.runtime.docker_backend import sandbox_options

    try:
        scenario = (client.images.get(image).labels or {}).get("awm.scenario")
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"image {image} not found; build it with `awm build`", image=image) from exc
    command = ["verify", "--task-idx", str(task_idx), "--final-db", "/data/final.db", "--flavour", flavour]
    if final_answer is not None:
        command += ["--final-answer", final_answer]
    with tempfile.TemporaryDirectory(prefix="awm-verify-") as tmp:
        folder = Path(tmp)
        shutil.copyfile(final_db, folder / "final.db")
        folder.chmod(0o755)
        (folder / "final.db").chmod(0o644)
        container = client.containers.run(
            image, command, detach=True, **sandbox_options(network=False),
            volumes={str(folder): {"bind": "/data", "mode": "ro"}},
            labels={**owner_labels(run_id, scenario), LABEL_ROLE: _ROLE},
        )
        try:
            try:
                code = int(container.wait(timeout=_GRADE_TIMEOUT_S).get("StatusCode", -1))
            except requests.exceptions.ConnectionError as exc:
                raise VerifierError(f"grading task {task_idx} in {image} took over {_GRADE_TIMEOUT_S:g}s",
                                    image=image, scenario=scenario) from exc
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)
    try:
        result: dict[str, Any] = json.loads(out)
    except ValueError:
        raise VerifierError(f"grading task {task_idx} in {image} failed (exit {code}): "
                            f"{(err.strip().splitlines() or ['no output'])[-1]}", image=image,
                            scenario=scenario) from None
    return result


def judge_prompt_input(task: str, trajectory: list[dict[str, Any]], facts: Any) -> str:
    """The judge's user message: task, number of steps, trajectory, the verifier's facts."""
    return (f"Task:\n{task}\n\nNumber of steps: {len(trajectory)}\n\nTrajectory:\n"
            f"{json.dumps(trajectory, indent=2, ensure_ascii=False, default=str)}\n\n"
            f"Database facts:\n{json.dumps({'code_execution_result': facts}, indent=2, default=str)}")


def parse_judge_reply(text: str) -> tuple[str, dict[str, Any] | None]:
    """(classification, the reply's object); ``judge_error`` when it is not one of the classes."""
    reply: Any = None
    try:
        reply = json.loads(text)
    except ValueError:
        block = re.search(r"\{.*\}", text or "", re.DOTALL)  # the first {...} block, as a whole
        if block is not None:
            try:
                reply = json.loads(block.group(0))
            except ValueError:
                reply = None
    if not isinstance(reply, dict):
        return JUDGE_ERROR, None
    label = reply.get("classification")
    return (label if label in JUDGE_CLASSES else JUDGE_ERROR), reply


async def llm_judge(llm: LLMConfig, task: str, trajectory: list[dict[str, Any]], facts: Any,
                    *, prompt: str = JUDGE_PROMPT) -> dict[str, Any]:
    """One judge call (temperature 1, 4,096 completion tokens): `{classification, judge_result}`."""
    client = llm.client()
    try:
        response = await client.chat.completions.create(
            model=llm.model, temperature=1.0, max_completion_tokens=4096,
            messages=[{"role": "system", "content": prompt},
                      {"role": "user", "content": judge_prompt_input(task, trajectory, facts)}],
        )
        text = response.choices[0].message.content or ""
    except openai.APIError as exc:
        return {"classification": JUDGE_ERROR, "judge_result": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await client.close()
    label, reply = parse_judge_reply(text)
    return {"classification": label, "judge_result": reply if reply is not None else text}


def verify_document(run: Mapping[str, Any], mode: Mode, verify_result: dict[str, Any] | None,
                    *, error: str | None = None, llm_judgement: dict[str, Any] | None = None,
                    rewards: RewardMap | None = None) -> dict[str, Any]:
    """The content of verify.<mode>.json: the original's fields plus a numeric `reward`."""
    if mode == "code":
        result = (verify_result or {}).get("result")
        reward_type = JUDGE_ERROR if error or result == "error" else ("complete" if result == "complete" else "others")
    else:
        reward_type = (llm_judgement or {}).get("classification", JUDGE_ERROR) if not error else JUDGE_ERROR
    doc: dict[str, Any] = {
        "scenario": run.get("scenario"), "task_id": run.get("task_id"), "task": run.get("task"),
        "mode": mode, "reward_type": reward_type, "verify_result": verify_result,
    }
    if mode == "sql":
        doc["llm_judge"] = llm_judgement or {"classification": JUDGE_ERROR, "judge_result": None}
    if error:
        doc["error"] = error
    doc["reward"] = (rewards or RewardMap())(reward_type)
    return doc


def final_answer_of(run: Mapping[str, Any]) -> str | None:
    """The last assistant message's content, as the original read it."""
    for message in reversed(run.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return str(message.get("content") or "")
    return None



async def verify_run(
    run_dir: Path,
    mode: Mode,
    *,
    image: str | None = None,
    llm: LLMConfig | None = None,
    prompt: str = JUDGE_PROMPT,
    rewards: RewardMap | None = None,
    client: docker.DockerClient | None = None,
) -> dict[str, Any]:
    """`awm verify`: grade a run folder's final.db in the image's sandbox; write verify.<mode>.json.

    Raises:
        AWMError: not a run folder, or no final.db in it.
        InvalidInput: sql mode without a judge model.
        ImageNotFound: the scenario's image is not built.
    """
    import asyncio

    from awm.agent.run import read_run
    from awm.core.naming import image_ref, normalise
    from awm.runtime.docker_backend import engine_client

    run = read_run(run_dir)
    final_db = run_dir / "final.db"
    if not final_db.is_file():
        raise AWMError(f"{run_dir} has no final.db to grade", path=run_dir)
    if mode == "sql" and llm is None:
        raise InvalidInput("sql mode needs the judge's model: --model NAME (and --api_url)")
    scenario, task_id = run.get("scenario"), run.get("task_id")
    if not scenario or not isinstance(task_id, int):
        raise AWMError(f"{run_dir}/trajectory.json names no scenario and task_id; pass --image", path=run_dir)
    image = image or image_ref(normalise(str(scenario)))
    docker_client = client or engine_client("verify")
    answer = final_answer_of(run)
    error: str | None = None
    result: dict[str, Any] | None = None
    try:
        result = await asyncio.to_thread(grade_database, docker_client, image, task_id, final_db,
                                         final_answer=answer, flavour=mode)
        if result.get("result") == "error":
            error = str(result.get("error"))
    except VerifierError as exc:
        error = exc.message
    judgement = None
    if mode == "sql" and error is None and llm is not None and result is not None:
        judgement = await llm_judge(llm, str(run.get("task") or ""), list(run.get("trajectory") or []),
                                    result.get("value"), prompt=prompt)
    doc = verify_document(run, mode, result, error=error, llm_judgement=judgement, rewards=rewards)
    atomic_write(run_dir / f"verify.{mode}.json", json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    return doc
