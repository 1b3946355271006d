import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """All of user 1's open urgent tickets reassigned to Marcus Webb (Tier 2), each with an internal note."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        marcus = final.execute(
            "SELECT id FROM users WHERE full_name = 'Marcus Webb' AND team = 'Tier 2'"
        ).fetchone()
        if marcus is None:
            return {"result": "others"}
        marcus_id = marcus[0]
        targets = [
            r[0]
            for r in init.execute(
                "SELECT id FROM tickets WHERE assignee_id = 1 AND status = 'open' AND priority = 'urgent'"
            )
        ]
        if not targets:
            return {"result": "others"}
        initial_comment_ids = {r[0] for r in init.execute("SELECT id FROM ticket_comments")}
        for ticket_id in targets:
            assignee_id, status = final.execute(
                "SELECT assignee_id, status FROM tickets WHERE id = ?", (ticket_id,)
            ).fetchone()
            if assignee_id != marcus_id or status != "open":
                return {"result": "others"}
            notes = [
                " ".join(body.lower().split())
                for cid, body in final.execute(
                    "SELECT id, body FROM ticket_comments WHERE ticket_id = ? AND author_id = 1 AND is_internal = 1",
                    (ticket_id,),
                )
                if cid not in initial_comment_ids
            ]
            if not any("reassigned to marcus webb" in n and "leave" in n for n in notes):
                return {"result": "others"}
        # other tickets keep their assignee; no public replies were sent on the targets
        before = dict(init.execute("SELECT id, assignee_id FROM tickets").fetchall())
        after = dict(final.execute("SELECT id, assignee_id FROM tickets").fetchall())
        for ticket_id, assignee in before.items():
            if ticket_id not in targets and after.get(ticket_id) != assignee:
                return {"result": "others"}
        marks = ",".join("?" * len(targets))
        public = [
            r[0]
            for r in final.execute(
                f"SELECT id FROM ticket_comments WHERE ticket_id IN ({marks}) AND is_internal = 0", targets
            )
            if r[0] not in initial_comment_ids
        ]
        if public:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
