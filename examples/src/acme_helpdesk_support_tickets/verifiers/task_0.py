import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """New high-priority email ticket for Priya Raman (Northwind Logistics), assigned to user 1, tagged billing."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        initial_ids = {r[0] for r in init.execute("SELECT id FROM tickets")}
        final_ids = {r[0] for r in final.execute("SELECT id FROM tickets")}
        if not initial_ids <= final_ids:
            return {"result": "others"}
        new_ids = final_ids - initial_ids
        if len(new_ids) != 1:
            return {"result": "others"}
        new_id = new_ids.pop()
        cust = final.execute(
            "SELECT id FROM customers WHERE full_name = 'Priya Raman' AND company = 'Northwind Logistics'"
        ).fetchone()
        high_sla = final.execute("SELECT id FROM sla_policies WHERE priority = 'high'").fetchone()
        if cust is None or high_sla is None:
            return {"result": "others"}
        row = final.execute(
            "SELECT subject, description, customer_id, assignee_id, sla_policy_id, status, priority, channel "
            "FROM tickets WHERE id = ?",
            (new_id,),
        ).fetchone()
        subject, description, customer_id, assignee_id, sla_id, status, priority, channel = row
        if subject.strip().rstrip(".").lower() != "invoice export returns 500 error":
            return {"result": "others"}
        if "500" not in (description or "") or "invoice export" not in (description or "").lower():
            return {"result": "others"}
        if customer_id != cust[0] or assignee_id != 1:
            return {"result": "others"}
        if priority != "high" or sla_id != high_sla[0] or channel != "email" or status != "open":
            return {"result": "others"}
        tags = {
            r[0]
            for r in final.execute(
                "SELECT t.name FROM ticket_tags tt JOIN tags t ON t.id = tt.tag_id WHERE tt.ticket_id = ?",
                (new_id,),
            )
        }
        if "billing" not in tags:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
