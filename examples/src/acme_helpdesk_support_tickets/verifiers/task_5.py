import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """User 1's tickets solved before 2024-11-01 are closed; every other ticket keeps its status."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        targets = {
            r[0]
            for r in init.execute(
                "SELECT id FROM tickets WHERE assignee_id = 1 AND status = 'solved' "
                "AND solved_at IS NOT NULL AND solved_at < '2024-11-01'"
            )
        }
        if not targets:
            return {"result": "others"}
        before = dict(init.execute("SELECT id, status FROM tickets").fetchall())
        after = dict(final.execute("SELECT id, status FROM tickets").fetchall())
        if set(before) - set(after):
            return {"result": "others"}
        for ticket_id, status in before.items():
            if ticket_id in targets:
                if after[ticket_id] != "closed":
                    return {"result": "others"}
            elif after[ticket_id] != status:
                return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
