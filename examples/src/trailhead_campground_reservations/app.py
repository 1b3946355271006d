import os
from datetime import date, datetime, timezone
from typing import List, Literal, Optional

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Float, ForeignKey, Integer, String, Text, create_engine, func
from sqlalchemy.orm import declarative_base, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH", "sqlite:///./trailhead_campground_reservations.db")
engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine, autocommit=False, autoflush=False)
Base = declarative_base()

CURRENT_USER_ID = 1
ACTIVE_STATUSES = ("pending", "confirmed")

class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True, autoincrement=True)
    full_name = Column(Text, nullable=False)
    email = Column(Text, nullable=False, unique=True)
    phone = Column(Text)
    role = Column(Text, nullable=False, default="camper")
    created_at = Column(Text, nullable=False)

class Park(Base):
    __tablename__ = "parks"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(Text, nullable=False, unique=True)
    state = Column(Text, nullable=False)
    description = Column(Text)
    phone = Column(Text)
    check_in_time = Column(Text, nullable=False, default="14:00")
    check_out_time = Column(Text, nullable=False, default="11:00")
    created_at = Column(Text, nullable=False)

class Campsite(Base):
    __tablename__ = "campsites"
    id = Column(Integer, primary_key=True, autoincrement=True)
    park_id = Column(Integer, ForeignKey("parks.id"), nullable=False)
    loop_name = Column(Text, nullable=False)
    site_number = Column(Text, nullable=False)
    site_type = Column(Text, nullable=False)
    max_occupancy = Column(Integer, nullable=False)
    nightly_rate = Column(Float, nullable=False)
    has_electric = Column(Integer, nullable=False, default=0)
    is_accessible = Column(Integer, nullable=False, default=0)
    status = Column(Text, nullable=False, default="open")

class Reservation(Base):
    __tablename__ = "reservations"
    id = Column(Integer, primary_key=True, autoincrement=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    campsite_id = Column(Integer, ForeignKey("campsites.id"), nullable=False)
    check_in = Column(String, nullable=False)
    check_out = Column(String, nullable=False)
    guests = Column(Integer, nullable=False)
    status = Column(Text, nullable=False, default="pending")
    total_cost = Column(Float, nullable=False)
    special_requests = Column(Text)
    cancellation_reason = Column(Text)
    created_at = Column(Text, nullable=False)
    updated_at = Column(Text, nullable=False)

class Payment(Base):
    __tablename__ = "payments"
    id = Column(Integer, primary_key=True, autoincrement=True)
    reservation_id = Column(Integer, ForeignKey("reservations.id"), nullable=False)
    amount = Column(Float, nullable=False)
    method = Column(Text, nullable=False)
    status = Column(Text, nullable=False, default="paid")
    paid_at = Column(Text, nullable=False)
    refunded_at = Column(Text)

class Review(Base):
    __tablename__ = "reviews"
    id = Column(Integer, primary_key=True, autoincrement=True)
    user_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    campsite_id = Column(Integer, ForeignKey("campsites.id"), nullable=False)
    reservation_id = Column(Integer, ForeignKey("reservations.id"), nullable=False, unique=True)
    rating = Column(Integer, nullable=False)
    title = Column(Text, nullable=False)
    comment = Column(Text)
    created_at = Column(Text, nullable=False)

class ParkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    state: str
    description: Optional[str] = None
    phone: Optional[str] = None
    check_in_time: str
    check_out_time: str

class CampsiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    park_id: int
    loop_name: str
    site_number: str
    site_type: str
    max_occupancy: int
    nightly_rate: float
    has_electric: bool
    is_accessible: bool
    status: str

class CampsiteDetailOut(CampsiteOut):
    park_name: str
    average_rating: Optional[float] = None
    review_count: int

class AvailabilityOut(BaseModel):
    campsite_id: int
    check_in: str
    check_out: str
    nights: int
    available: bool
    estimated_total: float
    conflicts: List[str] = Field(description="Overlapping active bookings as 'check_in to check_out'")

class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    user_id: int
    campsite_id: int
    reservation_id: int
    rating: int
    title: str
    comment: Optional[str] = None
    created_at: str

class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    reservation_id: int
    amount: float
    method: str
    status: str
    paid_at: str
    refunded_at: Optional[str] = None

class ReservationOut(BaseModel):
    id: int
    campsite_id: int
    park_name: str
    loop_name: str
    site_number: str
    check_in: str
    check_out: str
    nights: int
    guests: int
    status: str
    total_cost: float
    amount_paid: float
    balance_due: float
    special_requests: Optional[str] = None
    cancellation_reason: Optional[str] = None
    created_at: str
    updated_at: str

class ReservationDetailOut(ReservationOut):
    payments: List[PaymentOut]

class ReservationCreate(BaseModel):
    campsite_id: int = Field(..., description="Campsite to book")
    check_in: date = Field(..., description="Arrival date (YYYY-MM-DD)")
    check_out: date = Field(..., description="Departure date (YYYY-MM-DD), after check_in")
    guests: int = Field(..., ge=1, description="Number of people staying")
    special_requests: Optional[str] = Field(None, max_length=500)

class ReservationUpdate(BaseModel):
    campsite_id: Optional[int] = Field(None, description="Move the stay to another campsite")
    check_in: Optional[date] = None
    check_out: Optional[date] = None
    guests: Optional[int] = Field(None, ge=1)
    special_requests: Optional[str] = Field(None, max_length=500)

class ReservationCancel(BaseModel):
    reason: str = Field(..., min_length=1, max_length=300, description="Why the stay is cancelled")

class PaymentCreate(BaseModel):
    method: Literal["card", "paypal", "gift_card"] = Field(..., description="Pays the full outstanding balance")

class ReviewCreate(BaseModel):
    reservation_id: int = Field(..., description="A completed reservation of the current user")
    rating: int = Field(..., ge=1, le=5)
    title: str = Field(..., min_length=1, max_length=120)
    comment: Optional[str] = Field(None, max_length=2000)

def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()

def find_conflicts(db, campsite_id: int, check_in: str, check_out: str, exclude_id: Optional[int] = None):
    q = db.query(Reservation).filter(Reservation.campsite_id == campsite_id, Reservation.status.in_(ACTIVE_STATUSES),
                                     Reservation.check_in < check_out, Reservation.check_out > check_in)
    if exclude_id is not None:
        q = q.filter(Reservation.id != exclude_id)
    return q.order_by(Reservation.check_in).all()

def amount_paid(db, reservation_id: int) -> float:
    total = db.query(func.sum(Payment.amount)).filter(
        Payment.reservation_id == reservation_id, Payment.status == "paid"
    ).scalar()
    return round(total or 0.0, 2)

def reservation_out(db, r: Reservation, detail: bool = False):
    site = db.get(Campsite, r.campsite_id)
    park = db.get(Park, site.park_id)
    paid = amount_paid(db, r.id)
    data = dict(
        id=r.id, campsite_id=r.campsite_id, park_name=park.name, loop_name=site.loop_name,
        site_number=site.site_number, check_in=r.check_in, check_out=r.check_out,
        nights=(date.fromisoformat(r.check_out) - date.fromisoformat(r.check_in)).days,
        guests=r.guests, status=r.status, total_cost=r.total_cost, amount_paid=paid,
        balance_due=round(max(r.total_cost - paid, 0.0), 2) if r.status in ACTIVE_STATUSES else 0.0,
        special_requests=r.special_requests, cancellation_reason=r.cancellation_reason,
        created_at=r.created_at, updated_at=r.updated_at,
    )
    if detail:
        pays = db.query(Payment).filter(Payment.reservation_id == r.id).order_by(Payment.id).all()
        return ReservationDetailOut(**data, payments=[PaymentOut.model_validate(p) for p in pays])
    return ReservationOut(**data)

def get_own_reservation(db, reservation_id: int) -> Reservation:
    r = db.get(Reservation, reservation_id)
    if r is None or r.user_id != CURRENT_USER_ID:
        raise HTTPException(status_code=404, detail=f"Reservation {reservation_id} not found")
    return r

def validate_stay(db, campsite_id: int, check_in: date, check_out: date, guests: int, exclude_id=None) -> Campsite:
    site = db.get(Campsite, campsite_id)
    if site is None:
        raise HTTPException(status_code=404, detail=f"Campsite {campsite_id} not found")
    if site.status != "open":
        raise HTTPException(status_code=400, detail="Campsite is closed for booking")
    if check_out <= check_in:
        raise HTTPException(status_code=400, detail="check_out must be after check_in")
    if guests > site.max_occupancy:
        raise HTTPException(status_code=400, detail=f"Campsite holds at most {site.max_occupancy} guests")
    if find_conflicts(db, campsite_id, check_in.isoformat(), check_out.isoformat(), exclude_id):
        raise HTTPException(status_code=409, detail="Campsite is already booked for some of those nights")
    return site

app = FastAPI(
    title="Trailhead Campground Reservations API",
    description="Find parks and campsites, check availability, and manage the current camper's reservations, payments and reviews.",
    version="1.0.0",
)

@app.get("/parks", operation_id="list_parks", summary="List parks", tags=["parks"],
         description="List parks, optionally filtered by state code or a name fragment.",
         response_model=List[ParkOut])
def list_parks(state: Optional[str] = Query(None, description="Two-letter state code, e.g. OR"),
               name: Optional[str] = Query(None, description="Case-insensitive name fragment"),
               limit: int = Query(50, ge=1, le=200)):
    db = SessionLocal()
    try:
        q = db.query(Park)
        if state:
            q = q.filter(func.upper(Park.state) == state.upper())
        if name:
            q = q.filter(Park.name.ilike(f"%{name}%"))
        return q.order_by(Park.name).limit(limit).all()
    finally:
        db.close()

@app.get("/campsites", operation_id="search_campsites", summary="Search campsites", tags=["campsites"],
         description="Search open campsites by park, type, loop, minimum capacity, maximum nightly rate and electric hookup.",
         response_model=List[CampsiteOut])
def search_campsites(park_id: Optional[int] = Query(None),
                     site_type: Optional[Literal["tent", "rv", "cabin", "group"]] = Query(None),
                     loop_name: Optional[str] = Query(None, description="Case-insensitive loop name fragment"),
                     min_occupancy: Optional[int] = Query(None, ge=1),
                     max_nightly_rate: Optional[float] = Query(None, ge=0),
                     has_electric: Optional[bool] = Query(None),
                     limit: int = Query(50, ge=1, le=200)):
    db = SessionLocal()
    try:
        q = db.query(Campsite).filter(Campsite.status == "open")
        if park_id is not None:
            q = q.filter(Campsite.park_id == park_id)
        if site_type:
            q = q.filter(Campsite.site_type == site_type)
        if loop_name:
            q = q.filter(Campsite.loop_name.ilike(f"%{loop_name}%"))
        if min_occupancy is not None:
            q = q.filter(Campsite.max_occupancy >= min_occupancy)
        if max_nightly_rate is not None:
            q = q.filter(Campsite.nightly_rate <= max_nightly_rate)
        if has_electric is not None:
            q = q.filter(Campsite.has_electric == int(has_electric))
        return q.order_by(Campsite.park_id, Campsite.loop_name, Campsite.id).limit(limit).all()
    finally:
        db.close()

@app.get("/campsites/{campsite_id}", operation_id="get_campsite", summary="Get campsite details", tags=["campsites"],
         description="Get one campsite with its park name and average review rating.",
         response_model=CampsiteDetailOut)
def get_campsite(campsite_id: int = Path(...)):
    db = SessionLocal()
    try:
        site = db.get(Campsite, campsite_id)
        if site is None:
            raise HTTPException(status_code=404, detail=f"Campsite {campsite_id} not found")
        avg, count = db.query(func.avg(Review.rating), func.count(Review.id)).filter(
            Review.campsite_id == campsite_id).one()
        base = CampsiteOut.model_validate(site).model_dump()
        return CampsiteDetailOut(**base, park_name=db.get(Park, site.park_id).name,
                                 average_rating=round(avg, 2) if avg is not None else None, review_count=count)
    finally:
        db.close()

@app.get("/campsites/{campsite_id}/availability", operation_id="check_campsite_availability",
         summary="Check campsite availability", tags=["campsites"],
         description="Check whether a campsite is free for every night from check_in up to (not including) check_out.",
         response_model=AvailabilityOut)
def check_campsite_availability(campsite_id: int = Path(...),
                                check_in: date = Query(..., description="YYYY-MM-DD"),
                                check_out: date = Query(..., description="YYYY-MM-DD")):
    db = SessionLocal()
    try:
        site = db.get(Campsite, campsite_id)
        if site is None:
            raise HTTPException(status_code=404, detail=f"Campsite {campsite_id} not found")
        if check_out <= check_in:
            raise HTTPException(status_code=400, detail="check_out must be after check_in")
        conflicts = find_conflicts(db, campsite_id, check_in.isoformat(), check_out.isoformat())
        nights = (check_out - check_in).days
        return AvailabilityOut(
            campsite_id=campsite_id, check_in=check_in.isoformat(), check_out=check_out.isoformat(),
            nights=nights, available=site.status == "open" and not conflicts,
            estimated_total=round(nights * site.nightly_rate, 2),
            conflicts=[f"{c.check_in} to {c.check_out}" for c in conflicts],
        )
    finally:
        db.close()

@app.get("/campsites/{campsite_id}/reviews", operation_id="list_campsite_reviews", summary="List campsite reviews",
         tags=["reviews"], description="List reviews for a campsite, newest first, optionally with a minimum rating.",
         response_model=List[ReviewOut])
def list_campsite_reviews(campsite_id: int = Path(...),
                          min_rating: Optional[int] = Query(None, ge=1, le=5),
                          limit: int = Query(20, ge=1, le=100)):
    db = SessionLocal()
    try:
        if db.get(Campsite, campsite_id) is None:
            raise HTTPException(status_code=404, detail=f"Campsite {campsite_id} not found")
        q = db.query(Review).filter(Review.campsite_id == campsite_id)
        if min_rating is not None:
            q = q.filter(Review.rating >= min_rating)
        return q.order_by(Review.created_at.desc()).limit(limit).all()
    finally:
        db.close()

@app.get("/reservations", operation_id="list_my_reservations", summary="List my reservations", tags=["reservations"],
         description="List the current user's reservations with park/site names, nights and balance due.",
         response_model=List[ReservationOut])
def list_my_reservations(status: Optional[Literal["pending", "confirmed", "cancelled", "completed"]] = Query(None),
                         park_id: Optional[int] = Query(None),
                         limit: int = Query(50, ge=1, le=200)):
    db = SessionLocal()
    try:
        q = db.query(Reservation).filter(Reservation.user_id == CURRENT_USER_ID)
        if status:
            q = q.filter(Reservation.status == status)
        if park_id is not None:
            q = q.join(Campsite, Campsite.id == Reservation.campsite_id).filter(Campsite.park_id == park_id)
        return [reservation_out(db, r) for r in q.order_by(Reservation.check_in).limit(limit).all()]
    finally:
        db.close()

@app.get("/reservations/{reservation_id}", operation_id="get_reservation", summary="Get a reservation",
         tags=["reservations"], description="Get one of the current user's reservations including its payments.",
         response_model=ReservationDetailOut)
def get_reservation(reservation_id: int = Path(...)):
    db = SessionLocal()
    try:
        return reservation_out(db, get_own_reservation(db, reservation_id), detail=True)
    finally:
        db.close()

@app.post("/reservations", operation_id="create_reservation", summary="Book a campsite", tags=["reservations"],
          description="Create a pending reservation for the current user; total = nights x nightly rate. Pay it to confirm.",
          response_model=ReservationOut, status_code=201)
def create_reservation(body: ReservationCreate):
    db = SessionLocal()
    try:
        site = validate_stay(db, body.campsite_id, body.check_in, body.check_out, body.guests)
        ts = now_iso()
        r = Reservation(user_id=CURRENT_USER_ID, campsite_id=site.id, check_in=body.check_in.isoformat(),
                        check_out=body.check_out.isoformat(), guests=body.guests, status="pending",
                        total_cost=round((body.check_out - body.check_in).days * site.nightly_rate, 2),
                        special_requests=body.special_requests, created_at=ts, updated_at=ts)
        db.add(r)
        db.commit()
        db.refresh(r)
        return reservation_out(db, r)
    finally:
        db.close()

@app.patch("/reservations/{reservation_id}", operation_id="update_reservation", summary="Change a reservation",
           tags=["reservations"],
           description="Change dates, guest count, campsite or requests of a pending/confirmed reservation. "
                       "The total is recalculated; any increase shows up as balance_due.",
           response_model=ReservationOut)
def update_reservation(body: ReservationUpdate, reservation_id: int = Path(...)):
    db = SessionLocal()
    try:
        r = get_own_reservation(db, reservation_id)
        if r.status not in ACTIVE_STATUSES:
            raise HTTPException(status_code=400, detail=f"Cannot change a {r.status} reservation")
        campsite_id = body.campsite_id if body.campsite_id is not None else r.campsite_id
        check_in = body.check_in or date.fromisoformat(r.check_in)
        check_out = body.check_out or date.fromisoformat(r.check_out)
        guests = body.guests if body.guests is not None else r.guests
        site = validate_stay(db, campsite_id, check_in, check_out, guests, exclude_id=r.id)
        r.campsite_id, r.guests = site.id, guests
        r.check_in, r.check_out = check_in.isoformat(), check_out.isoformat()
        r.total_cost = round((check_out - check_in).days * site.nightly_rate, 2)
        if body.special_requests is not None:
            r.special_requests = body.special_requests
        r.updated_at = now_iso()
        db.commit()
        db.refresh(r)
        return reservation_out(db, r)
    finally:
        db.close()

@app.post("/reservations/{reservation_id}/cancel", operation_id="cancel_reservation", summary="Cancel a reservation",
          tags=["reservations"],
          description="Cancel a pending/confirmed reservation with a reason; its paid payments are refunded.",
          response_model=ReservationDetailOut)
def cancel_reservation(body: ReservationCancel, reservation_id: int = Path(...)):
    db = SessionLocal()
    try:
        r = get_own_reservation(db, reservation_id)
        if r.status not in ACTIVE_STATUSES:
            raise HTTPException(status_code=400, detail=f"Reservation is already {r.status}")
        ts = now_iso()
        r.status, r.cancellation_reason, r.updated_at = "cancelled", body.reason, ts
        for p in db.query(Payment).filter(Payment.reservation_id == r.id, Payment.status == "paid"):
            p.status, p.refunded_at = "refunded", ts
        db.commit()
        db.refresh(r)
        return reservation_out(db, r, detail=True)
    finally:
        db.close()

@app.post("/reservations/{reservation_id}/payments", operation_id="pay_reservation", summary="Pay a reservation",
          tags=["payments"],
          description="Pay the full outstanding balance of a pending/confirmed reservation; a pending one becomes confirmed.",
          response_model=PaymentOut, status_code=201)
def pay_reservation(body: PaymentCreate, reservation_id: int = Path(...)):
    db = SessionLocal()
    try:
        r = get_own_reservation(db, reservation_id)
        if r.status not in ACTIVE_STATUSES:
            raise HTTPException(status_code=400, detail=f"Cannot pay a {r.status} reservation")
        due = round(r.total_cost - amount_paid(db, r.id), 2)
        if due <= 0:
            raise HTTPException(status_code=400, detail="Nothing is due on this reservation")
        p = Payment(reservation_id=r.id, amount=due, method=body.method, status="paid", paid_at=now_iso())
        db.add(p)
        if r.status == "pending":
            r.status = "confirmed"
        r.updated_at = p.paid_at
        db.commit()
        db.refresh(p)
        return p
    finally:
        db.close()

@app.post("/reviews", operation_id="create_review", summary="Review a completed stay", tags=["reviews"],
          description="Post a 1-5 star review for one of the current user's completed reservations (one per stay).",
          response_model=ReviewOut, status_code=201)
def create_review(body: ReviewCreate):
    db = SessionLocal()
    try:
        r = get_own_reservation(db, body.reservation_id)
        if r.status != "completed":
            raise HTTPException(status_code=400, detail="Only completed stays can be reviewed")
        if db.query(Review).filter(Review.reservation_id == r.id).first():
            raise HTTPException(status_code=409, detail="This stay has already been reviewed")
        review = Review(user_id=CURRENT_USER_ID, campsite_id=r.campsite_id, reservation_id=r.id, rating=body.rating,
                        title=body.title, comment=body.comment, created_at=now_iso())
        db.add(review)
        db.commit()
        db.refresh(review)
        return review
    finally:
        db.close()

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))
