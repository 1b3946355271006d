from __future__ import annotations

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.routes import generated_operation_id, read_routes
from tests.builder.conftest import Dataset

ROUTER_MODULE = '''
from fastapi import APIRouter, FastAPI
app = FastAPI()
router = APIRouter(prefix="/v1")

@app.get("/health", operation_id="health")
def health(): ...

@router.post("/items/{item_id}", operation_id="create_item")
async def create_item(item_id: int): ...

@app.api_route("/multi", methods=["PUT", "PATCH"], operation_id="multi")
def multi(): ...

@app.delete("/things/{thing_id}")
def remove_thing(thing_id: int): ...

app.include_router(router, prefix="/api")

if __name__ == "__main__":
    pass
'''


def test_routes_are_read_without_running_the_module() -> None:
    facts = read_routes(ROUTER_MODULE + "\nraise SystemExit('never executed')\n")
    assert facts.has_app
    assert facts.has_main_guard
    assert facts.syntax_error is None
    assert [(r.name, r.method, r.path) for r in facts.routes] == [
        ("health", "GET", "/health"),
        ("create_item", "POST", "/api/v1/items/{item_id}"),
        ("multi", "PUT", "/multi"),
        ("multi", "PATCH", "/multi"),
        ("remove_thing_things__thing_id__delete", "DELETE", "/things/{thing_id}"),
    ]
    assert [r.has_operation_id for r in facts.routes][-1] is False


def test_generated_operation_id_matches_fastapi() -> None:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    app = FastAPI()

    @app.delete("/things/{thing_id}")
    def remove_thing(thing_id: int) -> None: ...

    route = next(r for r in app.routes if isinstance(r, APIRoute))
    assert app.openapi()["paths"]["/things/{thing_id}"]["delete"]["operationId"] == (
        generated_operation_id(route.name, route.path_format, "DELETE")
    )


def test_missing_duplicate_and_shadowed_routes_are_problems(dataset: Dataset) -> None:
    module = dataset.files["gen_envs.jsonl"][0]["full_code"]
    module = module.replace(
        'if __name__ == "__main__":',
        '@app.get("/notes", operation_id="search_notes")\n'
        "def search_notes(q: str = ''):\n    return []\n\n\n"
        '@app.get("/notes/{note_id}", operation_id="create_note")\n'
        "def get_note(note_id: int):\n    return {}\n\n\n"
        '@app.get("/count")\n'
        "def count_notes():\n    return 0\n\n\n"
        'if __name__ == "__main__":',
    )
    dataset.files["gen_envs.jsonl"][0]["full_code"] = module
    bundle = load_catalog(dataset.write()).bundles["quick_notes_personal"]
    # the OpenAPI document keeps the last of two GET /notes: list_notes is not a tool
    assert [t.name for t in bundle.tools] == [
        "create_note", "search_notes", "create_note", "count_notes_count_get"]
    assert [r.name for r in bundle.routes if r.shadowed] == ["list_notes"]
    lines = [i for i, text in enumerate(module.splitlines(), 1) if 'operation_id="create_note"' in text]
    problems = [p.message for p in bundle.problems]
    assert problems == [
        "routes without operation_id (tool names will be generated): count_notes",
        (
            "shadowed route: GET /notes is defined 2 times (list_notes, search_notes); the tool "
            "list shows 'search_notes' but calls run the handler of 'list_notes'"
        ),
        f"duplicate operation_id 'create_note' (module lines {lines[0]} and {lines[1]})",
    ]
