import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """Eggs and Baby Spinach shopping items marked purchased; their quantities added to the pantry."""
    sl_cols = "id, user_id, ingredient_id, quantity, unit, is_purchased"
    pi_cols = "id, user_id, ingredient_id, quantity, unit, expires_on"
    try:
        init = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True)
        final = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True)
        try:
            names = {n: i for i, n in init.execute(
                "SELECT id, name FROM ingredients WHERE name IN ('Eggs', 'Baby Spinach')")}
            targets = {}
            for name, ing in names.items():
                rows = init.execute(
                    "SELECT id, quantity, unit FROM shopping_list_items WHERE user_id = 1 AND ingredient_id = ? "
                    "AND is_purchased = 0", (ing,)).fetchall()
                if len(rows) != 1:
                    return {"result": "others"}
                targets[ing] = rows[0]
            sl_before = {r[0]: r for r in init.execute(f"SELECT {sl_cols} FROM shopping_list_items")}
            sl_after = {r[0]: r for r in final.execute(f"SELECT {sl_cols} FROM shopping_list_items")}
            pi_before = {(r[1], r[2]): r for r in init.execute(f"SELECT {pi_cols} FROM pantry_items")}
            pi_after = {(r[1], r[2]): r for r in final.execute(f"SELECT {pi_cols} FROM pantry_items")}
        finally:
            init.close()
            final.close()
        if len(targets) != 2:
            return {"result": "others"}
        # shopping list: the two items purchased, everything else untouched
        if set(sl_after) != set(sl_before):
            return {"result": "others"}
        target_ids = {t[0] for t in targets.values()}
        for i, r in sl_before.items():
            if i in target_ids:
                if sl_after[i] != r[:5] + (1,):
                    return {"result": "others"}
            elif sl_after[i] != r:
                return {"result": "others"}
        # pantry: bought quantity added on top of the previous stock
        for ing, (_, bought, unit) in targets.items():
            had = pi_before.get((1, ing))
            now = pi_after.get((1, ing))
            expected = (had[3] if had else 0) + bought
            if now is None or abs(now[3] - expected) > 1e-6 or now[4] != unit:
                return {"result": "others"}
        changed_keys = {(1, ing) for ing in targets}
        if set(pi_after) - changed_keys != set(pi_before) - changed_keys:
            return {"result": "others"}
        if any(pi_after[k] != r for k, r in pi_before.items() if k not in changed_keys):
            return {"result": "others"}
        return {"result": "complete"}
    except Exception:
        return {"result": "others"}
