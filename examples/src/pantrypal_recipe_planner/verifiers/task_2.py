import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """The current user's lunch on 2025-03-13 is deleted; every other meal plan entry is unchanged."""
    cols = "id, user_id, recipe_id, plan_date, meal_slot, servings, notes"
    try:
        init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
        try:
            target = init.execute(
                "SELECT id FROM meal_plan_entries WHERE user_id = 1 AND plan_date = '2025-03-13' "
                "AND meal_slot = 'lunch'").fetchone()
            if not target:
                return {"result": "others"}
            before = {r[0]: r for r in init.execute(f"SELECT {cols} FROM meal_plan_entries")}
            after = {r[0]: r for r in final.execute(f"SELECT {cols} FROM meal_plan_entries")}
        finally:
            init.close()
            final.close()
        expected = {i: r for i, r in before.items() if i != target[0]}
        if after != expected:
            return {"result": "others"}
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
