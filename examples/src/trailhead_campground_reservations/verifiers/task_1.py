import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 1: user 1's Pine Loop site 12 stay moved from 2025-06-03..05 to 2025-06-10..12, same site, 4 guests."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        target = init.execute(
            "SELECT r.id, r.campsite_id, c.nightly_rate FROM reservations r "
            "JOIN campsites c ON c.id = r.campsite_id JOIN parks p ON p.id = c.park_id "
            "WHERE r.user_id = 1 AND p.name = 'Pine Ridge Lake State Park' AND c.loop_name = 'Pine Loop' "
            "AND c.site_number = '12' AND r.check_in = '2025-06-03' AND r.status = 'confirmed'"
        ).fetchone()
        if target is None:
            return {"result": "others"}
        rid, site_id, rate = target

        old_res = {r[0]: r for r in init.execute("SELECT * FROM reservations")}
        new_res = {r[0]: r for r in final.execute("SELECT * FROM reservations")}
        if set(old_res) != set(new_res):
            return {"result": "others"}
        if any(new_res[k] != v for k, v in old_res.items() if k != rid):
            return {"result": "others"}

        row = final.execute(
            "SELECT user_id, campsite_id, check_in, check_out, guests, status, total_cost "
            "FROM reservations WHERE id = ?", (rid,)
        ).fetchone()
        if row[:6] != (1, site_id, "2025-06-10", "2025-06-12", 4, "confirmed"):
            return {"result": "others"}
        if abs(row[6] - 2 * rate) > 0.01:
            return {"result": "others"}

        # the stay keeps its payment (still paid, nothing refunded)
        old_pay = init.execute("SELECT * FROM payments WHERE reservation_id = ? ORDER BY id", (rid,)).fetchall()
        new_pay = final.execute("SELECT * FROM payments WHERE reservation_id = ? ORDER BY id", (rid,)).fetchall()
        if old_pay != new_pay:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
