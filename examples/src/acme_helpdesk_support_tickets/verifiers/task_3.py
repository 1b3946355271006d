import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """'Mobile app crashes on Android 14 startup': needs-info removed, bug added, priority high with the high SLA."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        row = init.execute(
            "SELECT id, status FROM tickets WHERE subject = 'Mobile app crashes on Android 14 startup'"
        ).fetchone()
        if row is None:
            return {"result": "others"}
        ticket_id, initial_status = row

        def tag_names(conn):
            return {
                r[0]
                for r in conn.execute(
                    "SELECT t.name FROM ticket_tags tt JOIN tags t ON t.id = tt.tag_id WHERE tt.ticket_id = ?",
                    (ticket_id,),
                )
            }

        expected = (tag_names(init) - {"needs-info"}) | {"bug"}
        if tag_names(final) != expected:
            return {"result": "others"}
        priority, sla_id, status = final.execute(
            "SELECT priority, sla_policy_id, status FROM tickets WHERE id = ?", (ticket_id,)
        ).fetchone()
        high_sla = final.execute("SELECT id FROM sla_policies WHERE priority = 'high'").fetchone()
        if priority != "high" or high_sla is None or sla_id != high_sla[0] or status != initial_status:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
