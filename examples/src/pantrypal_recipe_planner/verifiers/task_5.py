import re
import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Answer names the current user's longest dinner (prep + cook) of 2025-03-10..2025-03-16 and its minutes."""
    if not final_answer:
        return {"result": "others"}
    try:
        conn = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT r.title, r.prep_minutes + r.cook_minutes AS total FROM meal_plan_entries m "
                "JOIN recipes r ON r.id = m.recipe_id WHERE m.user_id = 1 AND m.meal_slot = 'dinner' "
                "AND m.plan_date BETWEEN '2025-03-10' AND '2025-03-16' ORDER BY total DESC").fetchall()
        finally:
            conn.close()
        if not rows or (len(rows) > 1 and rows[1][1] == rows[0][1]):
            return {"result": "others"}
        title, total = rows[0]
        answer = str(final_answer).lower()
        if title.lower() not in answer:
            return {"result": "others"}
        if not re.search(rf"(?<!\d){total}(?!\d)", answer):
            return {"result": "others"}
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
