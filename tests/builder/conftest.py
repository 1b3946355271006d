"""A tiny, valid AWM dataset written into tmp_path, which each test then breaks one way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MODULE = '''
import os
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import create_engine, Column, Integer, String
from sqlalchemy.orm import declarative_base, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH", "sqlite:///./notes.db")
engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine, autocommit=False, autoflush=False)
Base = declarative_base()
app = FastAPI(title="Notes")


class Note(Base):
    __tablename__ = "notes"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer)
    body = Column(String)


@app.get("/notes", operation_id="list_notes", summary="List notes", tags=["notes"])
def list_notes():
    db = SessionLocal()
    try:
        return [{"id": n.id, "body": n.body} for n in db.query(Note).all()]
    finally:
        db.close()


@app.post("/notes", operation_id="create_note", summary="Create a note", tags=["notes"])
def create_note(body: str):
    db = SessionLocal()
    try:
        db.add(Note(user_id=1, body=body))
        db.commit()
        return {"ok": True}
    finally:
        db.close()


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))
'''

VERIFIER = '''
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    import sqlite3
    conn = sqlite3.connect(final_db_path)
    n = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    return {"result": "complete" if n > 2 else "others"}
'''


def scenario_records(name: str, sid: str) -> dict[str, list[dict[str, Any]]]:
    """The records of one healthy scenario, by file name."""
    return {
        "gen_scenario.jsonl": [{"name": name, "description": "Take notes.", "categories": ["x"]}],
        "gen_tasks.jsonl": [{"scenario": name, "tasks": ["Add a note.", "Add two notes."]}],
        "gen_db.jsonl": [
            {
                "scenario": sid,
                "db_path": "/somewhere/else.db",
                "db_schema": {
                    "tables": [
                        {
                            "name": "users",
                            "ddl": "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
                            "indexes": [],
                        },
                        {
                            "name": "notes",
                            "ddl": "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER "
                            "NOT NULL REFERENCES users(id), body TEXT)",
                            "indexes": ["CREATE INDEX ix_notes_user ON notes(user_id)"],
                        },
                    ]
                },
            }
        ],
        "gen_sample.jsonl": [
            {
                "scenario": sid,
                "tables_count": 2,
                "inserts_count": 3,
                "sample_data": {
                    "tables": [
                        {"table_name": "users", "reasoning": "", "insert_statements": [
                            "INSERT INTO users (id, name) VALUES (1, 'Ada')"]},
                        {"table_name": "notes", "reasoning": "", "insert_statements": [
                            "INSERT INTO notes (id, user_id, body) VALUES (1, 1, 'first')",
                            "INSERT INTO notes (id, user_id, body) VALUES (2, 1, 'second')",
                        ]},
                    ]
                },
            }
        ],
        "gen_envs.jsonl": [{"scenario": sid, "db_path": "/x.db", "full_code": MODULE}],
        "gen_verifier.pure_code.jsonl": [
            {"scenario": name, "task_idx": i, "task": t, "verification": {"code": VERIFIER}}
            for i, t in enumerate(["Add a note.", "Add two notes."])
        ],
    }


class Dataset:
    """A dataset folder under construction: records per file, written on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, list[Any]] = {}

    def add_scenario(self, name: str, sid: str) -> dict[str, list[dict[str, Any]]]:
        records = scenario_records(name, sid)
        for file, rows in records.items():
            self.files.setdefault(file, []).extend(rows)
        return records

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for file, rows in self.files.items():
            lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
            (self.root / file).write_text("\n".join(lines) + "\n")
        return self.root


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    ds = Dataset(tmp_path / "dataset")
    ds.add_scenario("Quick Notes (Personal)", "quick_notes_personal")
    ds.add_scenario("Team Notes", "team_notes")
    return ds
