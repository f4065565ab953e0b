-- psql variables: design (nocol|json|jsonb|child), nalloc (int)
DROP TABLE IF EXISTS allocations;
-- (A) stand-in for the client editing one partner's "taken" inside the document
-- (taken values are kept at 6 digits so the edit is an in-place overlay)
CREATE OR REPLACE FUNCTION bump(t text, pid text, d int) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE i int; o int;
BEGIN
  IF d = 0 THEN RETURN t; END IF;
  i := strpos(t, '"' || pid || '": ');
  o := i + strpos(substr(t, i), '"taken": ') + 8;
  RETURN overlay(t placing (substr(t, o, 6)::int + d)::text from o for 6);
END $$;
DROP TABLE IF EXISTS events;
CREATE TABLE events (
  event_id text NOT NULL,
  name text NOT NULL,
  total_seats integer NOT NULL,
  available_seats integer NOT NULL,
  version integer NOT NULL DEFAULT 0,
  reservation_count integer NOT NULL DEFAULT 0,
  held_seats integer NOT NULL DEFAULT 0,
  next_expiry timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT pk_events PRIMARY KEY (event_id),
  CONSTRAINT ck_events_total_seats_not_negative CHECK (total_seats >= 0),
  CONSTRAINT ck_events_reservation_count_not_negative CHECK (reservation_count >= 0),
  CONSTRAINT ck_events_available_seats_in_range CHECK (available_seats >= 0 AND available_seats + held_seats <= total_seats),
  CONSTRAINT ck_events_held_seats_not_negative CHECK (held_seats >= 0)
);
\if :{?ff}
ALTER TABLE events SET (fillfactor = :ff);
\endif
CREATE UNIQUE INDEX uq_events_lower_event_id ON events (lower(event_id));
CREATE INDEX ix_events_next_expiry ON events (next_expiry) WHERE next_expiry IS NOT NULL;
\if :{?coltype}
ALTER TABLE events ADD COLUMN allocations :coltype;
\endif
INSERT INTO events (event_id, name, total_seats, available_seats)
VALUES ('hot-event', 'Hot Event: Summer Arena Night', 100000000, 100000000);
-- a few cold neighbours so the table is not a single row
INSERT INTO events (event_id, name, total_seats, available_seats)
SELECT 'event-' || g, 'Event ' || g, 1000, 1000 FROM generate_series(1, 20) g;
CREATE TEMP TABLE alloc_src AS
SELECT CASE WHEN :'ids' = 'plain' THEN 'partner-' || lpad(g::text, 3, '0')
            ELSE substr(md5(g::text), 1, 12) END AS partner_id,
       CASE WHEN :'ids' = 'plain' THEN 1000000 ELSE 1000000 + (random() * 900000)::int END AS seats,
       100000 + (random() * 900)::int AS taken,
       (random() * 40)::int AS held,
       (random() * 20)::int AS overflow,
       50 + (random() * 50)::int AS max_held,
       false AS closed
FROM generate_series(1, :nalloc) g;
\if :{?coltype}
UPDATE events SET allocations = (
  SELECT '{' || string_agg(format('"%s": {"seats": %s, "taken": %s, "held": %s, "overflow": %s, "max_held": %s, "closed": %s}',
          partner_id, seats, taken, held, overflow, max_held, closed::text), ', ' ORDER BY partner_id) || '}'
  FROM alloc_src):::coltype
WHERE event_id = 'hot-event' AND :'fill' = 'yes';
\endif
\if :{?child}
CREATE TABLE allocations (
  event_id text NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
  partner_id varchar(64) NOT NULL,
  seats integer NOT NULL,
  taken integer NOT NULL DEFAULT 0,
  held integer NOT NULL DEFAULT 0,
  overflow integer NOT NULL DEFAULT 0,
  max_held integer NOT NULL,
  closed boolean NOT NULL DEFAULT false,
  PRIMARY KEY (event_id, partner_id),
  CHECK (taken >= 0 AND held >= 0 AND overflow >= 0),
  CHECK (taken + held <= seats + overflow)
);
INSERT INTO allocations SELECT 'hot-event', * FROM alloc_src;
\endif
VACUUM ANALYZE events;
\if :{?child}
VACUUM ANALYZE allocations;
\endif
CHECKPOINT;
