import os
from datetime import date, datetime, timezone
from typing import List, Literal, Optional

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, ForeignKey, Integer, Float, String, Text, create_engine
from sqlalchemy.orm import declarative_base, relationship, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH", "sqlite:///./pantrypal_recipe_planner.db")
engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine, autocommit=False, autoflush=False)
Base = declarative_base()

CURRENT_USER_ID = 1
MealSlot = Literal["breakfast", "lunch", "dinner", "snack"]
SLOT_ORDER = {"breakfast": 0, "lunch": 1, "dinner": 2, "snack": 3}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class IngredientLinkMixin:
    @property
    def ingredient_name(self) -> str:
        return self.ingredient.name


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True, autoincrement=True)
    username = Column(String, nullable=False, unique=True)
    full_name = Column(String, nullable=False)
    email = Column(String, nullable=False, unique=True)
    household_size = Column(Integer, nullable=False, default=1)
    created_at = Column(String, nullable=False)


class Ingredient(Base):
    __tablename__ = "ingredients"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String, nullable=False, unique=True)
    category = Column(String, nullable=False)
    default_unit = Column(String, nullable=False)


class Recipe(Base):
    __tablename__ = "recipes"
    id = Column(Integer, primary_key=True, autoincrement=True)
    author_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    title = Column(String, nullable=False, unique=True)
    cuisine = Column(String, nullable=False)
    meal_type = Column(String, nullable=False)
    servings = Column(Integer, nullable=False)
    prep_minutes = Column(Integer, nullable=False)
    cook_minutes = Column(Integer, nullable=False)
    is_vegetarian = Column(Integer, nullable=False, default=0)
    created_at = Column(String, nullable=False)
    ingredients = relationship("RecipeIngredient", order_by="RecipeIngredient.id")

    @property
    def total_minutes(self) -> int:
        return self.prep_minutes + self.cook_minutes


class RecipeIngredient(IngredientLinkMixin, Base):
    __tablename__ = "recipe_ingredients"
    id = Column(Integer, primary_key=True, autoincrement=True)
    recipe_id = Column(Integer, ForeignKey("recipes.id", ondelete="CASCADE"), nullable=False)
    ingredient_id = Column(Integer, ForeignKey("ingredients.id"), nullable=False)
    quantity = Column(Float, nullable=False)
    unit = Column(String, nullable=False)
    ingredient = relationship("Ingredient")


class MealPlanEntry(Base):
    __tablename__ = "meal_plan_entries"
    id = Column(Integer, primary_key=True, autoincrement=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    recipe_id = Column(Integer, ForeignKey("recipes.id"), nullable=False)
    plan_date = Column(String, nullable=False)
    meal_slot = Column(String, nullable=False)
    servings = Column(Integer, nullable=False)
    notes = Column(Text)
    created_at = Column(String, nullable=False)
    recipe = relationship("Recipe")

    @property
    def recipe_title(self) -> str:
        return self.recipe.title


class PantryItem(IngredientLinkMixin, Base):
    __tablename__ = "pantry_items"
    id = Column(Integer, primary_key=True, autoincrement=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    ingredient_id = Column(Integer, ForeignKey("ingredients.id"), nullable=False)
    quantity = Column(Float, nullable=False)
    unit = Column(String, nullable=False)
    expires_on = Column(String)
    updated_at = Column(String, nullable=False)
    ingredient = relationship("Ingredient")

    @property
    def category(self) -> str:
        return self.ingredient.category


class ShoppingListItem(IngredientLinkMixin, Base):
    __tablename__ = "shopping_list_items"
    id = Column(Integer, primary_key=True, autoincrement=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    ingredient_id = Column(Integer, ForeignKey("ingredients.id"), nullable=False)
    quantity = Column(Float, nullable=False)
    unit = Column(String, nullable=False)
    is_purchased = Column(Integer, nullable=False, default=0)
    added_at = Column(String, nullable=False)
    ingredient = relationship("Ingredient")


class IngredientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    category: str
    default_unit: str


class RecipeSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    cuisine: str
    meal_type: str
    servings: int
    prep_minutes: int
    cook_minutes: int
    total_minutes: int
    is_vegetarian: bool
    author_id: int


class RecipeIngredientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ingredient_id: int
    ingredient_name: str
    quantity: float
    unit: str


class RecipeDetail(RecipeSummary):
    ingredients: List[RecipeIngredientOut]


class MealPlanEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    recipe_id: int
    recipe_title: str
    plan_date: str
    meal_slot: str
    servings: int
    notes: Optional[str] = None
    created_at: str


class MealPlanEntryCreate(BaseModel):
    recipe_id: int = Field(..., description="Recipe to cook")
    plan_date: date = Field(..., description="Day of the meal, YYYY-MM-DD")
    meal_slot: MealSlot = Field(..., description="breakfast, lunch, dinner or snack")
    servings: int = Field(..., ge=1, le=24, description="Number of servings to cook")
    notes: Optional[str] = Field(None, max_length=500)


class MealPlanEntryUpdate(BaseModel):
    recipe_id: Optional[int] = None
    plan_date: Optional[date] = None
    meal_slot: Optional[MealSlot] = None
    servings: Optional[int] = Field(None, ge=1, le=24)
    notes: Optional[str] = Field(None, max_length=500)


class PantryItemOut(RecipeIngredientOut):
    id: int
    category: str
    expires_on: Optional[str] = None
    updated_at: str


class PantryItemSet(BaseModel):
    quantity: float = Field(..., ge=0, description="New total quantity on hand (absolute, not a delta)")
    unit: Optional[str] = Field(None, description="Unit; defaults to the existing or the ingredient's default unit")
    expires_on: Optional[date] = Field(None, description="Best-before date, YYYY-MM-DD")


class ShoppingListItemOut(RecipeIngredientOut):
    id: int
    is_purchased: bool
    added_at: str


class ShoppingListItemCreate(BaseModel):
    ingredient_id: int
    quantity: float = Field(..., gt=0)
    unit: Optional[str] = Field(None, description="Defaults to the ingredient's default unit")


class ShoppingListItemUpdate(BaseModel):
    quantity: Optional[float] = Field(None, gt=0)
    is_purchased: Optional[bool] = None


app = FastAPI(
    title="PantryPal Recipe Planner API",
    description="Plan the week's meals, browse recipes, track pantry stock and keep a shopping list.",
    version="1.0.0",
)


def _check_slot_free(db, plan_date: str, meal_slot: str, exclude_id: Optional[int] = None) -> None:
    query = db.query(MealPlanEntry).filter(MealPlanEntry.user_id == CURRENT_USER_ID,
                                           MealPlanEntry.plan_date == plan_date, MealPlanEntry.meal_slot == meal_slot)
    if exclude_id is not None:
        query = query.filter(MealPlanEntry.id != exclude_id)
    if query.first():
        raise HTTPException(status_code=409, detail=f"You already have a {meal_slot} planned on {plan_date}")


@app.get("/recipes", operation_id="list_recipes", summary="Search recipes",
         description="List recipes, optionally filtered by title text, cuisine, meal type, vegetarian flag and maximum total time (prep + cook).",
         tags=["recipes"], response_model=List[RecipeSummary])
def list_recipes(
    search: Optional[str] = Query(None, description="Case-insensitive substring of the title"),
    cuisine: Optional[str] = Query(None),
    meal_type: Optional[MealSlot] = Query(None),
    vegetarian: Optional[bool] = Query(None),
    max_total_minutes: Optional[int] = Query(None, ge=0),
    limit: int = Query(20, ge=1, le=100),
):
    db = SessionLocal()
    try:
        query = db.query(Recipe)
        if search:
            query = query.filter(Recipe.title.ilike(f"%{search}%"))
        if cuisine:
            query = query.filter(Recipe.cuisine.ilike(cuisine))
        if meal_type:
            query = query.filter(Recipe.meal_type == meal_type)
        if vegetarian is not None:
            query = query.filter(Recipe.is_vegetarian == (1 if vegetarian else 0))
        if max_total_minutes is not None:
            query = query.filter(Recipe.prep_minutes + Recipe.cook_minutes <= max_total_minutes)
        recipes = query.order_by(Recipe.title).limit(limit).all()
        return [RecipeSummary.model_validate(r) for r in recipes]
    finally:
        db.close()


@app.get("/recipes/{recipe_id}", operation_id="get_recipe", summary="Get a recipe with its ingredients",
         description="Return one recipe including every ingredient with quantity and unit for the recipe's base servings.",
         tags=["recipes"], response_model=RecipeDetail)
def get_recipe(recipe_id: int = Path(..., ge=1)):
    db = SessionLocal()
    try:
        recipe = db.get(Recipe, recipe_id)
        if not recipe:
            raise HTTPException(status_code=404, detail=f"Recipe {recipe_id} not found")
        return RecipeDetail.model_validate(recipe)
    finally:
        db.close()


@app.get("/ingredients", operation_id="list_ingredients", summary="List ingredients",
         description="List known ingredients with their category and default unit.",
         tags=["ingredients"], response_model=List[IngredientOut])
def list_ingredients(search: Optional[str] = Query(None, description="Case-insensitive substring of the name"),
                     category: Optional[str] = Query(None), limit: int = Query(50, ge=1, le=200)):
    db = SessionLocal()
    try:
        query = db.query(Ingredient)
        if search:
            query = query.filter(Ingredient.name.ilike(f"%{search}%"))
        if category:
            query = query.filter(Ingredient.category == category)
        return [IngredientOut.model_validate(i) for i in query.order_by(Ingredient.name).limit(limit).all()]
    finally:
        db.close()


@app.get("/meal-plan", operation_id="list_meal_plan", summary="List my meal plan",
         description="List the current user's planned meals, ordered by date and slot, optionally within a date range and for one meal slot.",
         tags=["meal plan"], response_model=List[MealPlanEntryOut])
def list_meal_plan(
    start_date: Optional[date] = Query(None, description="First day (inclusive), YYYY-MM-DD"),
    end_date: Optional[date] = Query(None, description="Last day (inclusive), YYYY-MM-DD"),
    meal_slot: Optional[MealSlot] = Query(None),
    limit: int = Query(50, ge=1, le=200),
):
    db = SessionLocal()
    try:
        query = db.query(MealPlanEntry).filter(MealPlanEntry.user_id == CURRENT_USER_ID)
        if start_date:
            query = query.filter(MealPlanEntry.plan_date >= start_date.isoformat())
        if end_date:
            query = query.filter(MealPlanEntry.plan_date <= end_date.isoformat())
        if meal_slot:
            query = query.filter(MealPlanEntry.meal_slot == meal_slot)
        entries = sorted(query.all(), key=lambda e: (e.plan_date, SLOT_ORDER.get(e.meal_slot, 9)))
        return [MealPlanEntryOut.model_validate(e) for e in entries[:limit]]
    finally:
        db.close()


@app.post("/meal-plan", operation_id="add_meal_plan_entry", summary="Plan a meal",
          description="Put a recipe on the current user's meal plan for a date and meal slot. Each slot of a day holds one meal.",
          tags=["meal plan"], response_model=MealPlanEntryOut, status_code=201)
def add_meal_plan_entry(body: MealPlanEntryCreate):
    db = SessionLocal()
    try:
        if not db.get(Recipe, body.recipe_id):
            raise HTTPException(status_code=404, detail=f"Recipe {body.recipe_id} not found")
        plan_date = body.plan_date.isoformat()
        _check_slot_free(db, plan_date, body.meal_slot)
        entry = MealPlanEntry(user_id=CURRENT_USER_ID, recipe_id=body.recipe_id, plan_date=plan_date,
                              meal_slot=body.meal_slot, servings=body.servings, notes=body.notes,
                              created_at=now_iso())
        db.add(entry)
        db.commit()
        db.refresh(entry)
        return MealPlanEntryOut.model_validate(entry)
    finally:
        db.close()


@app.patch("/meal-plan/{entry_id}", operation_id="update_meal_plan_entry", summary="Change a planned meal",
           description="Move a planned meal to another date or slot, swap its recipe, or change servings or notes. Only the fields sent are changed.",
           tags=["meal plan"], response_model=MealPlanEntryOut)
def update_meal_plan_entry(body: MealPlanEntryUpdate, entry_id: int = Path(..., ge=1)):
    db = SessionLocal()
    try:
        entry = db.get(MealPlanEntry, entry_id)
        if not entry or entry.user_id != CURRENT_USER_ID:
            raise HTTPException(status_code=404, detail=f"Meal plan entry {entry_id} not found")
        changes = body.model_dump(exclude_unset=True)
        if not changes:
            raise HTTPException(status_code=400, detail="No fields to update")
        if changes.get("recipe_id") is not None and not db.get(Recipe, changes["recipe_id"]):
            raise HTTPException(status_code=404, detail=f"Recipe {changes['recipe_id']} not found")
        new_date = changes["plan_date"].isoformat() if changes.get("plan_date") else entry.plan_date
        new_slot = changes.get("meal_slot") or entry.meal_slot
        _check_slot_free(db, new_date, new_slot, exclude_id=entry.id)
        entry.plan_date, entry.meal_slot = new_date, new_slot
        for field in ("recipe_id", "servings", "notes"):
            if field in changes and (changes[field] is not None or field == "notes"):
                setattr(entry, field, changes[field])
        db.commit()
        db.refresh(entry)
        return MealPlanEntryOut.model_validate(entry)
    finally:
        db.close()


@app.delete("/meal-plan/{entry_id}", operation_id="delete_meal_plan_entry", summary="Remove a planned meal",
            description="Delete one of the current user's meal plan entries and return the removed entry.",
            tags=["meal plan"], response_model=MealPlanEntryOut)
def delete_meal_plan_entry(entry_id: int = Path(..., ge=1)):
    db = SessionLocal()
    try:
        entry = db.get(MealPlanEntry, entry_id)
        if not entry or entry.user_id != CURRENT_USER_ID:
            raise HTTPException(status_code=404, detail=f"Meal plan entry {entry_id} not found")
        removed = MealPlanEntryOut.model_validate(entry)
        db.delete(entry)
        db.commit()
        return removed
    finally:
        db.close()


@app.get("/pantry", operation_id="list_pantry_items", summary="List my pantry",
         description="List what the current user has at home, optionally filtered by ingredient name, category or expiry date.",
         tags=["pantry"], response_model=List[PantryItemOut])
def list_pantry_items(
    search: Optional[str] = Query(None, description="Case-insensitive substring of the ingredient name"),
    category: Optional[str] = Query(None),
    expiring_before: Optional[date] = Query(None, description="Only items expiring on or before this date"),
    limit: int = Query(100, ge=1, le=200),
):
    db = SessionLocal()
    try:
        query = db.query(PantryItem).join(Ingredient).filter(PantryItem.user_id == CURRENT_USER_ID)
        if search:
            query = query.filter(Ingredient.name.ilike(f"%{search}%"))
        if category:
            query = query.filter(Ingredient.category == category)
        if expiring_before:
            query = query.filter(PantryItem.expires_on.isnot(None),
                                 PantryItem.expires_on <= expiring_before.isoformat())
        items = query.order_by(Ingredient.name).limit(limit).all()
        return [PantryItemOut.model_validate(i) for i in items]
    finally:
        db.close()


@app.put("/pantry/{ingredient_id}", operation_id="set_pantry_item", summary="Set pantry stock of an ingredient",
         description="Set the absolute quantity the current user has of an ingredient; creates the pantry item if it does not exist yet.",
         tags=["pantry"], response_model=PantryItemOut)
def set_pantry_item(body: PantryItemSet, ingredient_id: int = Path(..., ge=1)):
    db = SessionLocal()
    try:
        ingredient = db.get(Ingredient, ingredient_id)
        if not ingredient:
            raise HTTPException(status_code=404, detail=f"Ingredient {ingredient_id} not found")
        item = db.query(PantryItem).filter(PantryItem.user_id == CURRENT_USER_ID,
                                           PantryItem.ingredient_id == ingredient_id).first()
        if not item:
            item = PantryItem(user_id=CURRENT_USER_ID, ingredient_id=ingredient_id,
                              unit=body.unit or ingredient.default_unit)
            db.add(item)
        elif body.unit:
            item.unit = body.unit
        item.quantity = body.quantity
        if body.expires_on:
            item.expires_on = body.expires_on.isoformat()
        item.updated_at = now_iso()
        db.commit()
        db.refresh(item)
        return PantryItemOut.model_validate(item)
    finally:
        db.close()


@app.get("/shopping-list", operation_id="list_shopping_list", summary="List my shopping list",
         description="List the current user's shopping list items; purchased items are hidden unless include_purchased is true.",
         tags=["shopping list"], response_model=List[ShoppingListItemOut])
def list_shopping_list(include_purchased: bool = Query(False), limit: int = Query(100, ge=1, le=200)):
    db = SessionLocal()
    try:
        query = db.query(ShoppingListItem).filter(ShoppingListItem.user_id == CURRENT_USER_ID)
        if not include_purchased:
            query = query.filter(ShoppingListItem.is_purchased == 0)
        items = query.order_by(ShoppingListItem.id).limit(limit).all()
        return [ShoppingListItemOut.model_validate(i) for i in items]
    finally:
        db.close()


@app.post("/shopping-list", operation_id="add_shopping_list_item", summary="Add to my shopping list",
          description="Add an ingredient to the current user's shopping list. Fails with 409 if an unpurchased item for the same ingredient exists (update that one instead).",
          tags=["shopping list"], response_model=ShoppingListItemOut, status_code=201)
def add_shopping_list_item(body: ShoppingListItemCreate):
    db = SessionLocal()
    try:
        ingredient = db.get(Ingredient, body.ingredient_id)
        if not ingredient:
            raise HTTPException(status_code=404, detail=f"Ingredient {body.ingredient_id} not found")
        existing = db.query(ShoppingListItem).filter(
            ShoppingListItem.user_id == CURRENT_USER_ID, ShoppingListItem.ingredient_id == body.ingredient_id,
            ShoppingListItem.is_purchased == 0).first()
        if existing:
            raise HTTPException(status_code=409, detail=f"{ingredient.name} is already on the list (item {existing.id})")
        item = ShoppingListItem(user_id=CURRENT_USER_ID, ingredient_id=body.ingredient_id, quantity=body.quantity,
                                unit=body.unit or ingredient.default_unit, is_purchased=0, added_at=now_iso())
        db.add(item)
        db.commit()
        db.refresh(item)
        return ShoppingListItemOut.model_validate(item)
    finally:
        db.close()


@app.patch("/shopping-list/{item_id}", operation_id="update_shopping_list_item", summary="Update a shopping list item",
           description="Change the quantity of a shopping list item or mark it as purchased (or not purchased).",
           tags=["shopping list"], response_model=ShoppingListItemOut)
def update_shopping_list_item(body: ShoppingListItemUpdate, item_id: int = Path(..., ge=1)):
    db = SessionLocal()
    try:
        item = db.get(ShoppingListItem, item_id)
        if not item or item.user_id != CURRENT_USER_ID:
            raise HTTPException(status_code=404, detail=f"Shopping list item {item_id} not found")
        if body.quantity is None and body.is_purchased is None:
            raise HTTPException(status_code=400, detail="Send quantity and/or is_purchased")
        if body.quantity is not None:
            item.quantity = body.quantity
        if body.is_purchased is not None:
            item.is_purchased = 1 if body.is_purchased else 0
        db.commit()
        db.refresh(item)
        return ShoppingListItemOut.model_validate(item)
    finally:
        db.close()


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))
