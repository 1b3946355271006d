import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 0: new reservation at Cedar Hollow / Lakeshore Loop site 7, 2025-07-18..20, 3 guests, paid by card."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        site = final.execute(
            "SELECT c.id, c.nightly_rate FROM campsites c JOIN parks p ON p.id = c.park_id "
            "WHERE p.name = 'Cedar Hollow State Park' AND c.loop_name = 'Lakeshore Loop' AND c.site_number = '7'"
        ).fetchone()
        if site is None:
            return {"result": "others"}
        site_id, rate = site

        old_res = {r[0]: r for r in init.execute("SELECT * FROM reservations")}
        new_res = {r[0]: r for r in final.execute("SELECT * FROM reservations")}
        # existing reservations must be untouched
        if any(new_res.get(rid) != row for rid, row in old_res.items()):
            return {"result": "others"}
        added = [rid for rid in new_res if rid not in old_res]
        if len(added) != 1:
            return {"result": "others"}
        rid = added[0]
        row = final.execute(
            "SELECT user_id, campsite_id, check_in, check_out, guests, status, total_cost, special_requests "
            "FROM reservations WHERE id = ?", (rid,)
        ).fetchone()
        user_id, campsite_id, check_in, check_out, guests, status, total, requests = row
        if (user_id, campsite_id, check_in, check_out, guests, status) != (
            1, site_id, "2025-07-18", "2025-07-20", 3, "confirmed"
        ):
            return {"result": "others"}
        if abs(total - 2 * rate) > 0.01:
            return {"result": "others"}
        if "after 8" not in (requests or "").lower():
            return {"result": "others"}

        old_pay = {r[0]: r for r in init.execute("SELECT * FROM payments")}
        new_pay = {r[0]: r for r in final.execute("SELECT * FROM payments")}
        if any(new_pay.get(pid) != row for pid, row in old_pay.items()):
            return {"result": "others"}
        added_pay = [new_pay[pid] for pid in new_pay if pid not in old_pay]
        if len(added_pay) != 1:
            return {"result": "others"}
        pay = final.execute(
            "SELECT reservation_id, amount, method, status FROM payments WHERE id = ?", (added_pay[0][0],)
        ).fetchone()
        if pay[0] != rid or pay[2] != "card" or pay[3] != "paid" or abs(pay[1] - total) > 0.01:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
