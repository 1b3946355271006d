import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Thai Green Curry Chicken dinner moved from 2025-03-12 to 2025-03-14 (dinner) with 4 servings."""
    cols = "id, user_id, recipe_id, plan_date, meal_slot, servings, notes"
    try:
        init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
        try:
            curry_id = final.execute("SELECT id FROM recipes WHERE title = 'Thai Green Curry Chicken'").fetchone()[0]
            moved = init.execute(
                "SELECT id FROM meal_plan_entries WHERE user_id = 1 AND plan_date = '2025-03-12' "
                "AND meal_slot = 'dinner' AND recipe_id = ?", (curry_id,)).fetchone()
            if not moved:
                return {"result": "others"}
            before = {r[0]: r for r in init.execute(f"SELECT {cols} FROM meal_plan_entries")}
            after = {r[0]: r for r in final.execute(f"SELECT {cols} FROM meal_plan_entries")}
        finally:
            init.close()
            final.close()
        if len(after) != len(before):
            return {"result": "others"}
        # every other entry (any user) must be untouched
        for i, r in before.items():
            if i != moved[0] and after.get(i) != r:
                return {"result": "others"}
        # nothing left on the old slot for the current user
        if any(r[1] == 1 and r[3] == "2025-03-12" and r[4] == "dinner" for r in after.values()):
            return {"result": "others"}
        changed = [r for i, r in after.items() if i == moved[0] or i not in before]
        if len(changed) != 1:
            return {"result": "others"}
        _, user_id, recipe_id, plan_date, meal_slot, servings, _ = changed[0]
        if (user_id, recipe_id, plan_date, meal_slot, servings) != (1, curry_id, "2025-03-14", "dinner", 4):
            return {"result": "others"}
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
