import os
from datetime import datetime, timedelta, timezone
from typing import List, Literal, Optional

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, ForeignKey, Integer, Text, UniqueConstraint, create_engine, func
from sqlalchemy.orm import declarative_base, sessionmaker

DATABASE_PATH = os.getenv("DATABASE_PATH", "sqlite:///./acme_helpdesk_support_tickets.db")
engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine, autocommit=False, autoflush=False)
Base = declarative_base()

CURRENT_USER_ID = 1

Status = Literal["open", "pending", "on_hold", "solved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]
Channel = Literal["email", "chat", "phone", "web"]


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True, autoincrement=True)
    full_name = Column(Text, nullable=False)
    email = Column(Text, nullable=False, unique=True)
    role = Column(Text, nullable=False, default="agent")
    team = Column(Text, nullable=False)
    is_active = Column(Integer, nullable=False, default=1)
    created_at = Column(Text, nullable=False)


class Customer(Base):
    __tablename__ = "customers"
    id = Column(Integer, primary_key=True, autoincrement=True)
    full_name = Column(Text, nullable=False)
    email = Column(Text, nullable=False, unique=True)
    company = Column(Text, nullable=False)
    tier = Column(Text, nullable=False, default="standard")
    phone = Column(Text)
    created_at = Column(Text, nullable=False)


class SlaPolicy(Base):
    __tablename__ = "sla_policies"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(Text, nullable=False, unique=True)
    priority = Column(Text, nullable=False, unique=True)
    first_response_hours = Column(Integer, nullable=False)
    resolution_hours = Column(Integer, nullable=False)


class Ticket(Base):
    __tablename__ = "tickets"
    id = Column(Integer, primary_key=True, autoincrement=True)
    subject = Column(Text, nullable=False)
    description = Column(Text, nullable=False)
    customer_id = Column(Integer, ForeignKey("customers.id"), nullable=False)
    assignee_id = Column(Integer, ForeignKey("users.id"))
    sla_policy_id = Column(Integer, ForeignKey("sla_policies.id"), nullable=False)
    status = Column(Text, nullable=False, default="open")
    priority = Column(Text, nullable=False, default="normal")
    channel = Column(Text, nullable=False, default="email")
    created_at = Column(Text, nullable=False)
    updated_at = Column(Text, nullable=False)
    due_at = Column(Text)
    solved_at = Column(Text)


class TicketComment(Base):
    __tablename__ = "ticket_comments"
    id = Column(Integer, primary_key=True, autoincrement=True)
    ticket_id = Column(Integer, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    author_id = Column(Integer, ForeignKey("users.id"), nullable=False)
    body = Column(Text, nullable=False)
    is_internal = Column(Integer, nullable=False, default=0)
    created_at = Column(Text, nullable=False)


class Tag(Base):
    __tablename__ = "tags"
    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(Text, nullable=False, unique=True)
    color = Column(Text, nullable=False, default="#888888")


class TicketTag(Base):
    __tablename__ = "ticket_tags"
    __table_args__ = (UniqueConstraint("ticket_id", "tag_id"),)
    id = Column(Integer, primary_key=True, autoincrement=True)
    ticket_id = Column(Integer, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False)
    tag_id = Column(Integer, ForeignKey("tags.id", ondelete="CASCADE"), nullable=False)
    created_at = Column(Text, nullable=False)


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    full_name: str
    email: str
    role: str
    team: str
    is_active: bool


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    full_name: str
    email: str
    company: str
    tier: str
    phone: Optional[str] = None
    created_at: str


class SlaPolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    priority: str
    first_response_hours: int
    resolution_hours: int


class TagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    color: str


class CommentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    ticket_id: int
    author_id: int
    body: str
    is_internal: bool
    created_at: str


class TicketSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    subject: str
    customer_id: int
    customer_name: str
    assignee_id: Optional[int] = None
    status: str
    priority: str
    channel: str
    created_at: str
    updated_at: str
    due_at: Optional[str] = None
    solved_at: Optional[str] = None
    tags: List[str] = []


class TicketDetail(TicketSummary):
    description: str
    sla_policy_id: int
    comments: List[CommentOut] = []


class TicketCreate(BaseModel):
    subject: str = Field(..., min_length=3, max_length=200, description="Short summary of the issue")
    description: str = Field(..., min_length=1, description="Full description of the customer's problem")
    customer_id: int = Field(..., description="Id of the requesting customer")
    priority: Priority = Field("normal", description="low, normal, high or urgent")
    channel: Channel = Field("email", description="Channel the request came in on")
    assignee_id: Optional[int] = Field(None, description="Agent to assign; omit to leave unassigned")


class TicketUpdate(BaseModel):
    status: Optional[Status] = Field(None, description="New status")
    priority: Optional[Priority] = Field(None, description="New priority (re-applies the matching SLA policy)")
    assignee_id: Optional[int] = Field(None, description="Id of the agent to assign the ticket to")


class CommentCreate(BaseModel):
    body: str = Field(..., min_length=1, description="Text of the comment")
    is_internal: bool = Field(False, description="True for an internal note only agents can see; false for a public reply to the customer")


class TagAssign(BaseModel):
    tag_name: str = Field(..., min_length=1, description="Name of an existing tag, e.g. 'billing'")


class MessageOut(BaseModel):
    message: str


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None).isoformat()


def get_ticket_or_404(db, ticket_id: int) -> Ticket:
    ticket = db.get(Ticket, ticket_id)
    if ticket is None:
        raise HTTPException(status_code=404, detail=f"Ticket {ticket_id} not found")
    return ticket


def check_assignee(db, assignee_id: int) -> None:
    agent = db.get(User, assignee_id)
    if agent is None:
        raise HTTPException(status_code=404, detail=f"Agent {assignee_id} not found")
    if not agent.is_active:
        raise HTTPException(status_code=400, detail=f"Agent {agent.full_name} is deactivated")


def ticket_tags(db, ticket_id: int) -> List[str]:
    rows = db.query(Tag.name).join(TicketTag, TicketTag.tag_id == Tag.id).filter(TicketTag.ticket_id == ticket_id)
    return [r[0] for r in rows.order_by(Tag.name).all()]


def summary(db, ticket: Ticket) -> dict:
    customer = db.get(Customer, ticket.customer_id)
    data = {c.name: getattr(ticket, c.name) for c in Ticket.__table__.columns}
    data["customer_name"] = customer.full_name if customer else ""
    data["tags"] = ticket_tags(db, ticket.id)
    return data


def detail(db, ticket: Ticket) -> dict:
    data = summary(db, ticket)
    comments = db.query(TicketComment).filter(TicketComment.ticket_id == ticket.id)
    comments = comments.order_by(TicketComment.created_at, TicketComment.id).all()
    data["comments"] = [CommentOut.model_validate(c) for c in comments]
    return data


app = FastAPI(
    title="Acme Helpdesk API",
    description="Customer-support ticketing desk: tickets, comments, tags, customers, agents and SLA policies. "
    "All actions are performed as the signed-in support agent.",
    version="1.0.0",
)


@app.get("/tickets", operation_id="list_tickets", summary="List tickets",
         description="List tickets, newest first, filtered by status, priority, assignee, customer, tag or subject text.",
         tags=["tickets"], response_model=List[TicketSummary])
def list_tickets(
    status: Optional[Status] = Query(None, description="Filter by status"),
    priority: Optional[Priority] = Query(None, description="Filter by priority"),
    assigned_to_me: bool = Query(False, description="Only tickets assigned to the current agent"),
    assignee_id: Optional[int] = Query(None, description="Filter by assigned agent id"),
    customer_id: Optional[int] = Query(None, description="Filter by customer id"),
    tag: Optional[str] = Query(None, description="Only tickets carrying this tag name"),
    q: Optional[str] = Query(None, description="Case-insensitive text to search for in the subject"),
    limit: int = Query(50, ge=1, le=200, description="Maximum number of tickets to return"),
):
    db = SessionLocal()
    try:
        query = db.query(Ticket)
        if status:
            query = query.filter(Ticket.status == status)
        if priority:
            query = query.filter(Ticket.priority == priority)
        if assigned_to_me:
            query = query.filter(Ticket.assignee_id == CURRENT_USER_ID)
        if assignee_id is not None:
            query = query.filter(Ticket.assignee_id == assignee_id)
        if customer_id is not None:
            query = query.filter(Ticket.customer_id == customer_id)
        if tag:
            query = query.join(TicketTag, TicketTag.ticket_id == Ticket.id).join(Tag, Tag.id == TicketTag.tag_id)
            query = query.filter(func.lower(Tag.name) == tag.lower())
        if q:
            query = query.filter(Ticket.subject.ilike(f"%{q}%"))
        tickets = query.order_by(Ticket.created_at.desc()).limit(limit).all()
        return [summary(db, t) for t in tickets]
    finally:
        db.close()


@app.get("/tickets/{ticket_id}", operation_id="get_ticket", summary="Get ticket details",
         description="Full ticket with description, tags and the comment thread (public replies and internal notes).",
         tags=["tickets"], response_model=TicketDetail)
def get_ticket(ticket_id: int = Path(..., description="Ticket id")):
    db = SessionLocal()
    try:
        return detail(db, get_ticket_or_404(db, ticket_id))
    finally:
        db.close()


@app.post("/tickets", operation_id="create_ticket", summary="Create a ticket",
          description="Open a new ticket for a customer. The SLA policy and due date follow from the priority.",
          tags=["tickets"], response_model=TicketDetail, status_code=201)
def create_ticket(body: TicketCreate):
    db = SessionLocal()
    try:
        if db.get(Customer, body.customer_id) is None:
            raise HTTPException(status_code=404, detail=f"Customer {body.customer_id} not found")
        if body.assignee_id is not None:
            check_assignee(db, body.assignee_id)
        sla = db.query(SlaPolicy).filter(SlaPolicy.priority == body.priority).first()
        if sla is None:
            raise HTTPException(status_code=400, detail=f"No SLA policy for priority {body.priority}")
        created = now_iso()
        ticket = Ticket(
            subject=body.subject.strip(), description=body.description.strip(), customer_id=body.customer_id,
            assignee_id=body.assignee_id, sla_policy_id=sla.id, status="open", priority=body.priority,
            channel=body.channel, created_at=created, updated_at=created,
            due_at=(datetime.fromisoformat(created) + timedelta(hours=sla.resolution_hours)).isoformat(),
        )
        db.add(ticket)
        db.commit()
        db.refresh(ticket)
        return detail(db, ticket)
    finally:
        db.close()


@app.patch("/tickets/{ticket_id}", operation_id="update_ticket", summary="Update a ticket",
           description="Change status, priority and/or assignee. Closing requires the ticket to be solved first; "
           "closed tickets cannot be changed.",
           tags=["tickets"], response_model=TicketDetail)
def update_ticket(body: TicketUpdate, ticket_id: int = Path(..., description="Ticket id")):
    db = SessionLocal()
    try:
        ticket = get_ticket_or_404(db, ticket_id)
        if body.status is None and body.priority is None and body.assignee_id is None:
            raise HTTPException(status_code=400, detail="Nothing to update")
        if ticket.status == "closed":
            raise HTTPException(status_code=400, detail="Closed tickets cannot be modified")
        stamp = now_iso()
        if body.assignee_id is not None:
            check_assignee(db, body.assignee_id)
            ticket.assignee_id = body.assignee_id
        if body.priority is not None and body.priority != ticket.priority:
            sla = db.query(SlaPolicy).filter(SlaPolicy.priority == body.priority).first()
            ticket.priority = body.priority
            ticket.sla_policy_id = sla.id
            ticket.due_at = (datetime.fromisoformat(ticket.created_at) + timedelta(hours=sla.resolution_hours)).isoformat()
        if body.status is not None and body.status != ticket.status:
            if body.status == "closed" and ticket.status != "solved":
                raise HTTPException(status_code=400, detail="Only solved tickets can be closed")
            ticket.status = body.status
            if body.status == "solved":
                ticket.solved_at = stamp
            elif body.status != "closed":
                ticket.solved_at = None
        ticket.updated_at = stamp
        db.commit()
        db.refresh(ticket)
        return detail(db, ticket)
    finally:
        db.close()


@app.post("/tickets/{ticket_id}/comments", operation_id="add_ticket_comment", summary="Comment on a ticket",
          description="Add a public reply to the customer or an internal note, authored by the current agent.",
          tags=["comments"], response_model=CommentOut, status_code=201)
def add_ticket_comment(body: CommentCreate, ticket_id: int = Path(..., description="Ticket id")):
    db = SessionLocal()
    try:
        ticket = get_ticket_or_404(db, ticket_id)
        if ticket.status == "closed":
            raise HTTPException(status_code=400, detail="Cannot comment on a closed ticket")
        stamp = now_iso()
        comment = TicketComment(ticket_id=ticket.id, author_id=CURRENT_USER_ID, body=body.body.strip(),
                                is_internal=1 if body.is_internal else 0, created_at=stamp)
        db.add(comment)
        ticket.updated_at = stamp
        db.commit()
        db.refresh(comment)
        return comment
    finally:
        db.close()


@app.post("/tickets/{ticket_id}/tags", operation_id="add_ticket_tag", summary="Tag a ticket",
          description="Attach an existing tag (by name) to a ticket.",
          tags=["tags"], response_model=TicketDetail, status_code=201)
def add_ticket_tag(body: TagAssign, ticket_id: int = Path(..., description="Ticket id")):
    db = SessionLocal()
    try:
        ticket = get_ticket_or_404(db, ticket_id)
        tag = db.query(Tag).filter(func.lower(Tag.name) == body.tag_name.strip().lower()).first()
        if tag is None:
            raise HTTPException(status_code=404, detail=f"Tag '{body.tag_name}' does not exist")
        exists = db.query(TicketTag).filter_by(ticket_id=ticket.id, tag_id=tag.id).first()
        if exists:
            raise HTTPException(status_code=409, detail=f"Ticket {ticket.id} already has tag '{tag.name}'")
        stamp = now_iso()
        db.add(TicketTag(ticket_id=ticket.id, tag_id=tag.id, created_at=stamp))
        ticket.updated_at = stamp
        db.commit()
        return detail(db, ticket)
    finally:
        db.close()


@app.delete("/tickets/{ticket_id}/tags/{tag_name}", operation_id="remove_ticket_tag", summary="Remove a tag",
            description="Detach a tag (by name) from a ticket.",
            tags=["tags"], response_model=TicketDetail)
def remove_ticket_tag(ticket_id: int = Path(..., description="Ticket id"),
                      tag_name: str = Path(..., description="Tag name to remove")):
    db = SessionLocal()
    try:
        ticket = get_ticket_or_404(db, ticket_id)
        link = db.query(TicketTag).join(Tag, Tag.id == TicketTag.tag_id).filter(
            TicketTag.ticket_id == ticket.id, func.lower(Tag.name) == tag_name.strip().lower()).first()
        if link is None:
            raise HTTPException(status_code=404, detail=f"Ticket {ticket.id} has no tag '{tag_name}'")
        db.delete(link)
        ticket.updated_at = now_iso()
        db.commit()
        return detail(db, ticket)
    finally:
        db.close()


@app.get("/tags", operation_id="list_tags", summary="List tags",
         description="All tags that can be attached to tickets.", tags=["tags"], response_model=List[TagOut])
def list_tags():
    db = SessionLocal()
    try:
        return db.query(Tag).order_by(Tag.name).all()
    finally:
        db.close()


@app.get("/customers", operation_id="search_customers", summary="Search customers",
         description="Find customers by name, email or company (case-insensitive), optionally by tier.",
         tags=["customers"], response_model=List[CustomerOut])
def search_customers(
    q: Optional[str] = Query(None, description="Text matched against name, email and company"),
    tier: Optional[Literal["free", "standard", "premium", "enterprise"]] = Query(None, description="Filter by plan tier"),
    limit: int = Query(20, ge=1, le=100, description="Maximum number of customers to return"),
):
    db = SessionLocal()
    try:
        query = db.query(Customer)
        if q:
            like = f"%{q}%"
            query = query.filter(Customer.full_name.ilike(like) | Customer.email.ilike(like) | Customer.company.ilike(like))
        if tier:
            query = query.filter(Customer.tier == tier)
        return query.order_by(Customer.full_name).limit(limit).all()
    finally:
        db.close()


@app.get("/customers/{customer_id}", operation_id="get_customer", summary="Get a customer",
         description="Contact details, company and plan tier of one customer.",
         tags=["customers"], response_model=CustomerOut)
def get_customer(customer_id: int = Path(..., description="Customer id")):
    db = SessionLocal()
    try:
        customer = db.get(Customer, customer_id)
        if customer is None:
            raise HTTPException(status_code=404, detail=f"Customer {customer_id} not found")
        return customer
    finally:
        db.close()


@app.get("/agents", operation_id="list_agents", summary="List support agents",
         description="Support agents who can be assigned tickets, optionally filtered by team or name.",
         tags=["agents"], response_model=List[AgentOut])
def list_agents(
    team: Optional[str] = Query(None, description="Team name, e.g. 'Tier 2'"),
    name: Optional[str] = Query(None, description="Case-insensitive text matched against the agent's name"),
    active_only: bool = Query(True, description="Hide deactivated agents"),
):
    db = SessionLocal()
    try:
        query = db.query(User)
        if team:
            query = query.filter(func.lower(User.team) == team.lower())
        if name:
            query = query.filter(User.full_name.ilike(f"%{name}%"))
        if active_only:
            query = query.filter(User.is_active == 1)
        return query.order_by(User.full_name).all()
    finally:
        db.close()


@app.get("/sla-policies", operation_id="list_sla_policies", summary="List SLA policies",
         description="Response and resolution targets (in hours) for each ticket priority.",
         tags=["sla"], response_model=List[SlaPolicyOut])
def list_sla_policies():
    db = SessionLocal()
    try:
        return db.query(SlaPolicy).order_by(SlaPolicy.resolution_hours.desc()).all()
    finally:
        db.close()


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))
