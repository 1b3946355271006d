CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    full_name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    phone TEXT,
    role TEXT NOT NULL DEFAULT 'camper' CHECK (role IN ('camper', 'ranger', 'admin')),
    created_at TEXT NOT NULL
);

CREATE TABLE parks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    description TEXT,
    phone TEXT,
    check_in_time TEXT NOT NULL DEFAULT '14:00',
    check_out_time TEXT NOT NULL DEFAULT '11:00',
    created_at TEXT NOT NULL
);

CREATE TABLE campsites (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    park_id INTEGER NOT NULL,
    loop_name TEXT NOT NULL,
    site_number TEXT NOT NULL,
    site_type TEXT NOT NULL CHECK (site_type IN ('tent', 'rv', 'cabin', 'group')),
    max_occupancy INTEGER NOT NULL CHECK (max_occupancy > 0),
    nightly_rate REAL NOT NULL CHECK (nightly_rate >= 0),
    has_electric INTEGER NOT NULL DEFAULT 0 CHECK (has_electric IN (0, 1)),
    is_accessible INTEGER NOT NULL DEFAULT 0 CHECK (is_accessible IN (0, 1)),
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    FOREIGN KEY (park_id) REFERENCES parks (id),
    UNIQUE (park_id, loop_name, site_number)
);

CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    campsite_id INTEGER NOT NULL,
    check_in TEXT NOT NULL,
    check_out TEXT NOT NULL,
    guests INTEGER NOT NULL CHECK (guests > 0),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'cancelled', 'completed')),
    total_cost REAL NOT NULL CHECK (total_cost >= 0),
    special_requests TEXT,
    cancellation_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (campsite_id) REFERENCES campsites (id),
    CHECK (check_out > check_in)
);

CREATE TABLE payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation_id INTEGER NOT NULL,
    amount REAL NOT NULL CHECK (amount > 0),
    method TEXT NOT NULL CHECK (method IN ('card', 'paypal', 'gift_card')),
    status TEXT NOT NULL DEFAULT 'paid' CHECK (status IN ('paid', 'refunded')),
    paid_at TEXT NOT NULL,
    refunded_at TEXT,
    FOREIGN KEY (reservation_id) REFERENCES reservations (id)
);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    campsite_id INTEGER NOT NULL,
    reservation_id INTEGER NOT NULL UNIQUE,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title TEXT NOT NULL,
    comment TEXT,
    created_at TEXT NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (campsite_id) REFERENCES campsites (id),
    FOREIGN KEY (reservation_id) REFERENCES reservations (id)
);

CREATE INDEX idx_campsites_park ON campsites (park_id);
CREATE INDEX idx_reservations_user ON reservations (user_id);
CREATE INDEX idx_reservations_campsite_dates ON reservations (campsite_id, check_in, check_out);
CREATE INDEX idx_payments_reservation ON payments (reservation_id);
CREATE INDEX idx_reviews_campsite ON reviews (campsite_id);
