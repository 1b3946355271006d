import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 5: user 1's Juniper Mesa Sept 12-14 stay moved to the cheapest free Group Area site for 7, 7 guests,
    extra balance paid by gift card."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        target = init.execute(
            "SELECT r.id, r.check_in, r.check_out, r.total_cost FROM reservations r "
            "JOIN campsites c ON c.id = r.campsite_id JOIN parks p ON p.id = c.park_id "
            "WHERE r.user_id = 1 AND p.name = 'Juniper Mesa State Park' AND r.check_in = '2025-09-12' "
            "AND r.check_out = '2025-09-14' AND r.status = 'confirmed'"
        ).fetchone()
        if target is None:
            return {"result": "others"}
        rid, ci, co, old_total = target

        # expected site, computed from the initial database
        candidates = init.execute(
            "SELECT c.id, c.nightly_rate FROM campsites c JOIN parks p ON p.id = c.park_id "
            "WHERE p.name = 'Juniper Mesa State Park' AND c.loop_name = 'Group Area' AND c.status = 'open' "
            "AND c.max_occupancy >= 7 AND NOT EXISTS ("
            "  SELECT 1 FROM reservations o WHERE o.campsite_id = c.id AND o.id != ? "
            "  AND o.status IN ('pending', 'confirmed') AND o.check_in < ? AND o.check_out > ?) "
            "ORDER BY c.nightly_rate, c.id",
            (rid, co, ci),
        ).fetchall()
        if not candidates:
            return {"result": "others"}
        exp_site, exp_rate = candidates[0]
        exp_total = round(2 * exp_rate, 2)

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
        if row[:6] != (1, exp_site, ci, co, 7, "confirmed") or abs(row[6] - exp_total) > 0.01:
            return {"result": "others"}

        old_pay = {r[0]: r for r in init.execute("SELECT * FROM payments")}
        new_pay = {r[0]: r for r in final.execute("SELECT * FROM payments")}
        if any(new_pay.get(k) != v for k, v in old_pay.items()):
            return {"result": "others"}
        added = [k for k in new_pay if k not in old_pay]
        if len(added) != 1:
            return {"result": "others"}
        res_id, amount, method, status = final.execute(
            "SELECT reservation_id, amount, method, status FROM payments WHERE id = ?", (added[0],)
        ).fetchone()
        if res_id != rid or method != "gift_card" or status != "paid":
            return {"result": "others"}
        if abs(amount - (exp_total - old_total)) > 0.01:
            return {"result": "others"}
        paid = final.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM payments WHERE reservation_id = ? AND status = 'paid'", (rid,)
        ).fetchone()[0]
        if abs(paid - exp_total) > 0.01:
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
