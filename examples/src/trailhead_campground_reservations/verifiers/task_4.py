import re
import sqlite3
from datetime import date


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Task 4 (question): total nights and combined total cost of user 1's confirmed reservations."""
    if not final_answer:
        return {"result": "others"}
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        rows = final.execute(
            "SELECT check_in, check_out, total_cost FROM reservations WHERE user_id = 1 AND status = 'confirmed'"
        ).fetchall()
    finally:
        final.close()
    if not rows:
        return {"result": "others"}
    nights = sum((date.fromisoformat(co) - date.fromisoformat(ci)).days for ci, co, _ in rows)
    total = round(sum(t for _, _, t in rows), 2)

    numbers = []
    for tok in re.findall(r"\d[\d,]*(?:\.\d+)?", str(final_answer)):
        try:
            numbers.append(float(tok.replace(",", "")))
        except ValueError:
            pass
    has_nights = any(abs(n - nights) < 1e-9 for n in numbers)
    has_total = any(abs(n - total) < 0.01 for n in numbers)
    return {"result": "complete" if has_nights and has_total else "others"}
