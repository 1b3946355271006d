import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Mushroom Risotto planned for dinner 2025-03-16 (4 servings) and exactly the risotto ingredients
    missing from the current user's pantry added to the shopping list with the recipe quantities."""
    mp_cols = "id, user_id, recipe_id, plan_date, meal_slot, servings, notes"
    sl_cols = "id, user_id, ingredient_id, quantity, unit, is_purchased"
    try:
        init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
        try:
            recipe_id, base_servings = init.execute(
                "SELECT id, servings FROM recipes WHERE title = 'Mushroom Risotto'").fetchone()
            in_pantry = {r[0] for r in init.execute("SELECT ingredient_id FROM pantry_items WHERE user_id = 1")}
            factor = 4 / base_servings
            expected = {
                ing: (qty * factor, unit)
                for ing, qty, unit in init.execute(
                    "SELECT ingredient_id, quantity, unit FROM recipe_ingredients WHERE recipe_id = ?", (recipe_id,))
                if ing not in in_pantry
            }
            mp_before = {r[0]: r for r in init.execute(f"SELECT {mp_cols} FROM meal_plan_entries")}
            mp_after = {r[0]: r for r in final.execute(f"SELECT {mp_cols} FROM meal_plan_entries")}
            sl_before = {r[0]: r for r in init.execute(f"SELECT {sl_cols} FROM shopping_list_items")}
            sl_after = {r[0]: r for r in final.execute(f"SELECT {sl_cols} FROM shopping_list_items")}
        finally:
            init.close()
            final.close()
        if not expected:
            return {"result": "others"}
        # meal plan: exactly one new entry, the risotto dinner
        if len(mp_after) != len(mp_before) + 1 or any(mp_after.get(i) != r for i, r in mp_before.items()):
            return {"result": "others"}
        new_mp = [r for i, r in mp_after.items() if i not in mp_before][0]
        if new_mp[1:6] != (1, recipe_id, "2025-03-16", "dinner", 4):
            return {"result": "others"}
        # shopping list: old rows untouched, new rows are exactly the missing ingredients
        if any(sl_after.get(i) != r for i, r in sl_before.items()):
            return {"result": "others"}
        new_items = [r for i, r in sl_after.items() if i not in sl_before]
        if len(new_items) != len(expected):
            return {"result": "others"}
        seen = set()
        for _, user_id, ing, qty, unit, purchased in new_items:
            if user_id != 1 or purchased != 0 or ing not in expected or ing in seen:
                return {"result": "others"}
            exp_qty, exp_unit = expected[ing]
            if abs(qty - exp_qty) > 1e-6 or unit != exp_unit:
                return {"result": "others"}
            seen.add(ing)
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
