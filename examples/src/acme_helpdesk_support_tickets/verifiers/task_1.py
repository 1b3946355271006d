import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Public reply on 'SSO login loop after password reset' and ticket marked solved."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        row = init.execute(
            "SELECT t.id FROM tickets t JOIN customers c ON c.id = t.customer_id "
            "WHERE t.subject = 'SSO login loop after password reset' AND c.full_name = 'Daniel Cho'"
        ).fetchone()
        if row is None:
            return {"result": "others"}
        ticket_id = row[0]
        status, solved_at = final.execute(
            "SELECT status, solved_at FROM tickets WHERE id = ?", (ticket_id,)
        ).fetchone()
        if status != "solved" or not solved_at:
            return {"result": "others"}
        initial_comment_ids = {r[0] for r in init.execute("SELECT id FROM ticket_comments")}
        new_comments = [
            r
            for r in final.execute(
                "SELECT id, author_id, body, is_internal FROM ticket_comments WHERE ticket_id = ?", (ticket_id,)
            )
            if r[0] not in initial_comment_ids
        ]
        ok = False
        for _, author_id, body, is_internal in new_comments:
            text = " ".join(body.lower().split())
            if (
                author_id == 1
                and is_internal == 0
                and "deployed a fix for the sso redirect loop" in text
                and "clear your browser cookies" in text
            ):
                ok = True
        if not ok:
            return {"result": "others"}
        # no other ticket's status should have changed
        before = dict(init.execute("SELECT id, status FROM tickets WHERE id != ?", (ticket_id,)).fetchall())
        after = dict(final.execute("SELECT id, status FROM tickets WHERE id != ?", (ticket_id,)).fetchall())
        if any(after.get(k) != v for k, v in before.items()):
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
