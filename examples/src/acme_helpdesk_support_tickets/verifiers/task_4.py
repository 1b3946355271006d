import re
import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Question: number of user 1's pending tickets and the customer of the oldest one."""
    if not final_answer or not isinstance(final_answer, str):
        return {"result": "others"}
    final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
    try:
        rows = final.execute(
            "SELECT c.full_name FROM tickets t JOIN customers c ON c.id = t.customer_id "
            "WHERE t.assignee_id = 1 AND t.status = 'pending' ORDER BY t.created_at ASC, t.id ASC"
        ).fetchall()
    finally:
        final.close()
    if not rows:
        return {"result": "others"}
    count = len(rows)
    oldest_customer = rows[0][0]
    answer = final_answer.lower()
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    has_count = re.search(rf"(?<![\d.]){count}(?![\d.])", answer) is not None
    if not has_count and count in words:
        has_count = re.search(rf"\b{words[count]}\b", answer) is not None
    if not has_count:
        return {"result": "others"}
    if oldest_customer.lower() not in answer:
        return {"result": "others"}
    return {"result": "complete"}
