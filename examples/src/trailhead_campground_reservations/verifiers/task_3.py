import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 3: a 4-star 'Quiet and shady' review for user 1's May 2025 stay at Mossy Creek site A5."""
    init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        target = init.execute(
            "SELECT r.id, r.campsite_id FROM reservations r JOIN campsites c ON c.id = r.campsite_id "
            "JOIN parks p ON p.id = c.park_id "
            "WHERE r.user_id = 1 AND p.name = 'Mossy Creek State Park' AND c.site_number = 'A5' "
            "AND r.check_in LIKE '2025-05-%' AND r.status = 'completed'"
        ).fetchone()
        if target is None:
            return {"result": "others"}
        rid, site_id = target

        old_rev = {r[0]: r for r in init.execute("SELECT * FROM reviews")}
        new_rev = {r[0]: r for r in final.execute("SELECT * FROM reviews")}
        if any(new_rev.get(k) != v for k, v in old_rev.items()):
            return {"result": "others"}
        added = [k for k in new_rev if k not in old_rev]
        if len(added) != 1:
            return {"result": "others"}
        row = final.execute(
            "SELECT user_id, campsite_id, reservation_id, rating, title, comment FROM reviews WHERE id = ?",
            (added[0],),
        ).fetchone()
        user_id, campsite_id, reservation_id, rating, title, comment = row
        if (user_id, campsite_id, reservation_id, rating) != (1, site_id, rid, 4):
            return {"result": "others"}
        if (title or "").strip().strip("'\"").lower() != "quiet and shady":
            return {"result": "others"}
        if "creek sounds" not in (comment or "").lower() or "buggy" not in (comment or "").lower():
            return {"result": "others"}
        # reservations themselves are untouched
        if init.execute("SELECT * FROM reservations ORDER BY id").fetchall() != \
                final.execute("SELECT * FROM reservations ORDER BY id").fetchall():
            return {"result": "others"}
        return {"result": "complete"}
    finally:
        init.close()
        final.close()
