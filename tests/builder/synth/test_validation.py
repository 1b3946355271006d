"""Checks of generated pieces: each problem names what is wrong, for the model to fix."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from awm.builder.catalog.models import ApiSpec, DbSchema, SampleData
from awm.builder.synth.validation import module_problems, sample_problems, schema_problems, scrub, spec_problems
from tests.builder.conftest import MODULE

USERS = {"name": "users", "ddl": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"}
NOTES = {"name": "notes", "ddl": "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL "
                                 "REFERENCES users(id), body TEXT)",
         "indexes": ["CREATE INDEX ix_notes_user ON notes(user_id)"]}


def schema(*tables: Mapping[str, object]) -> DbSchema:
    return DbSchema.model_validate({"tables": list(tables)})


def rows(*groups: tuple[str, list[str]]) -> SampleData:
    return SampleData.model_validate({"tables": [{"table_name": t, "insert_statements": s} for t, s in groups]})


def test_a_good_schema_has_no_problem() -> None:
    assert schema_problems("s", schema(USERS, NOTES)) == []


@pytest.mark.parametrize(
    ("tables", "problem"),
    [
        ([USERS, {"name": "notes", "ddl": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT,)"}],
         "ddl of table 'notes' failed: near \")\": syntax error: CREATE TABLE notes"),
        ([NOTES], "there is no `users` table"),
        ([USERS, {"name": "notes", "ddl": "CREATE TABLE notes (id INTEGER PRIMARY KEY, tag_id INTEGER "
                                          "REFERENCES tags(id))"}],
         "table 'notes' references table 'tags', which the schema does not define"),
        ([USERS, {"name": "notes", "ddl": "CREATE TABLE memo (id INTEGER PRIMARY KEY)"}],
         "the ddl of table 'notes' creates table 'memo' instead"),
        ([USERS, {"name": "notes", "ddl": "DROP TABLE users"}], "the ddl of table 'notes' is not a CREATE TABLE"),
        ([USERS, {**NOTES, "indexes": ["CREATE INDEX ix ON nowhere(x)"]}],
         "index of table 'notes' failed: no such table: main.nowhere"),
        ([USERS, USERS], "table 'users' is defined more than once"),
    ],
)
def test_schema_problems(tables: list[dict[str, object]], problem: str) -> None:
    assert any(problem in p for p in schema_problems("s", schema(*tables))), schema_problems("s", schema(*tables))


def test_sample_foreign_key_violation_names_the_statement_and_error() -> None:
    sample = rows(("users", ["INSERT INTO users (id, name) VALUES (1, 'Ada')"]),
                  ("notes", ["INSERT INTO notes (id, user_id, body) VALUES (1, 1, 'ok')",
                             "INSERT INTO notes (id, user_id, body) VALUES (2, 42, 'orphan')"]))
    problems, notes = sample_problems("s", schema(USERS, NOTES), sample)
    assert problems == [("insert of table 'notes' failed: FOREIGN KEY constraint failed: "
                         "INSERT INTO notes (id, user_id, body) VALUES (2, 42, 'orphan')")]
    assert notes == []


@pytest.mark.parametrize(
    ("sample", "problem"),
    [
        (rows(("users", ["DELETE FROM users"])), "only INSERT statements are allowed; got: DELETE FROM users"),
        (rows(("users", ["INSERT INTO users (id, name) VALUES (2, 'Bo')"])),
         "there is no user with id 1 in `users` (the signed-in user)"),
        (rows(("users", ["INSERT INTO ghosts (id) VALUES (1)"])), "insert into unknown table 'ghosts'"),
        (rows(("ghosts", [])), "rows for table 'ghosts', which the schema does not define"),
    ],
)
def test_sample_problems(sample: SampleData, problem: str) -> None:
    problems, _ = sample_problems("s", schema(USERS, NOTES), sample)
    assert any(problem in p for p in problems), problems


def test_empty_tables_are_noted_not_refused() -> None:
    problems, notes = sample_problems("s", schema(USERS, NOTES), rows(("users", ["INSERT INTO users VALUES (1, 'A')"])))
    assert problems == []
    assert notes == ["tables left empty: notes"]


def endpoint(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"path": "/notes", "method": "GET", "operation_id": "list_notes", "request_params": {}}
    return {**base, **kw}


def spec(*endpoints: dict[str, object]) -> ApiSpec:
    return ApiSpec.model_validate({"api_groups": [{"group_name": "g", "endpoints": list(endpoints)}]})


def test_a_good_spec_has_no_problem() -> None:
    assert spec_problems(spec(
        endpoint(),
        endpoint(path="/notes/{note_id}", operation_id="get_note",
                 request_params={"note_id": {"type": "integer", "param_type": "path", "required": True, "example": 1}}),
        endpoint(method="POST", operation_id="create_note",
                 request_params={"body": {"type": "string", "param_type": "body", "required": True, "example": "x"}}),
    )) == []


@pytest.mark.parametrize(
    ("endpoints", "problem"),
    [
        ([endpoint(operation_id="ListNotes")], "GET /notes: operation_id 'ListNotes' must be snake_case"),
        ([endpoint(), endpoint(path="/n2")], "GET /n2: operation_id 'list_notes' is used twice"),
        ([endpoint(), endpoint(operation_id="other")], "GET /notes is specified twice"),
        ([endpoint(method="FETCH")], "FETCH /notes: method must be one of GET, POST, PUT, PATCH, DELETE"),
        ([endpoint(path="/notes/{note_id}")], "GET /notes/{note_id}: path parameter 'note_id' is not listed"),
        ([endpoint(request_params={"q": {"type": "string", "param_type": "body", "example": "x"}})],
         "GET /notes: a GET endpoint cannot take body parameter 'q'; use query"),
        ([endpoint(request_params={"q": {"type": "string", "param_type": "query", "required": True}})],
         "GET /notes: required parameter 'q' has no example value"),
        ([], "the specification has no endpoints"),
    ],
)
def test_spec_problems(endpoints: list[dict[str, object]], problem: str) -> None:
    problems = spec_problems(spec(*endpoints))
    assert any(problem in p for p in problems), problems


def test_module_problems() -> None:
    wanted = spec(endpoint(), endpoint(method="POST", operation_id="create_note"),
                  endpoint(method="DELETE", path="/notes/{id}", operation_id="delete_note"))
    assert module_problems(MODULE, wanted) == [
        "endpoints of the specification with no route of that operation_id: delete_note"
    ]
    assert module_problems("def broken(:\n", None) == ["the module does not parse: invalid syntax (line 1)"]
    shadowing = MODULE.replace('@app.post("/notes"', '@app.get("/notes"')
    assert any("GET /notes is defined by several routes (list_notes, create_note)" in p
               for p in module_problems(shadowing, None))
    bare = MODULE.split('if __name__ == "__main__":')[0].replace("DATABASE_PATH", "DB")
    assert module_problems(bare, None) == [
        "the module must read its database URL from the environment variable DATABASE_PATH",
        'the module must end with `if __name__ == "__main__":` running uvicorn',
    ]


def test_scrub_removes_what_differs_between_runs() -> None:
    text = "cannot open /tmp/awm-gen-x1y2/s/seed.db: <object at 0x7f3a2b1c4d50>"
    assert scrub(text, "/tmp/awm-gen-x1y2") == "cannot open <workdir>/s/seed.db: <object at 0x...>"
    assert scrub("no such file: '/tmp/awm-verify-ab12cd34/out.txt'") == "no such file: '<tmp>/out.txt'"
