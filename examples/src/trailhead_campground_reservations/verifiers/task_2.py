import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 2: user 1's upcoming August 2025 stay in cabin C3 at Granite Falls cancelled ('Family emergency'), refunded."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        target = init.execute(
            "SELECT r.id FROM reservations r JOIN campsites c ON c.id = r.campsite_id "
            "JOIN parks p ON p.id = c.park_id "
            "WHERE r.user_id = 1 AND p.name = 'Granite Falls Recreation Area' AND c.site_number = 'C3' "
            "AND r.check_in LIKE '2025-08-%' AND r.status IN ('pending', 'confirmed')"
        ).fetchall()
        if len(target) != 1:
            return {"result": "others"}
        rid = target[0][0]

        old_res = {r[0]: r for r in init.execute("SELECT * FROM reservations")}
        new_res = {r[0]: r for r in final.execute("SELECT * FROM reservations")}
        if set(old_res) != set(new_res):
            return {"result": "others"}
        if any(new_res[k] != v for k, v in old_res.items() if k != rid):
            return {"result": "others"}
        status, reason = final.execute(
            "SELECT status, cancellation_reason FROM reservations WHERE id = ?", (rid,)
        ).fetchone()
        if status != "cancelled" or "family emergency" not in (reason or "").lower():
            return {"result": "others"}

        old_pay = {r[0]: r for r in init.execute("SELECT * FROM payments")}
        new_pay = {r[0]: r for r in final.execute("SELECT * FROM payments")}
        if set(old_pay) != set(new_pay):
            return {"result": "others"}
        own = final.execute("SELECT id, status FROM payments WHERE reservation_id = ?", (rid,)).fetchall()
        if not own or any(st != "refunded" for _, st in own):
            return {"result": "others"}
        own_ids = {pid for pid, _ in own}
        if any(new_pay[k] != v for k, v in old_pay.items() if k not in own_ids):
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
