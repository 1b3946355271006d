import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Shakshuka planned for breakfast on 2025-03-15 with 3 servings; nothing else in the plan changed."""
    cols = "id, user_id, recipe_id, plan_date, meal_slot, servings, notes"
    try:
        init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
        try:
            row = final.execute("SELECT id FROM recipes WHERE title = 'Shakshuka'").fetchone()
            if not row:
                return {"result": "others"}
            shakshuka_id = row[0]
            before = {r[0]: r for r in init.execute(f"SELECT {cols} FROM meal_plan_entries")}
            after = {r[0]: r for r in final.execute(f"SELECT {cols} FROM meal_plan_entries")}
        finally:
            init.close()
            final.close()
        if len(after) != len(before) + 1:
            return {"result": "others"}
        if any(after.get(i) != r for i, r in before.items()):
            return {"result": "others"}
        new_rows = [r for i, r in after.items() if i not in before]
        if len(new_rows) != 1:
            return {"result": "others"}
        _, user_id, recipe_id, plan_date, meal_slot, servings, _ = new_rows[0]
        if (user_id, recipe_id, plan_date, meal_slot, servings) != (1, shakshuka_id, "2025-03-15", "breakfast", 3):
            return {"result": "others"}
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
