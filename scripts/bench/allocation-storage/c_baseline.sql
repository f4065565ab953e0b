-- (C) baseline: event row only. Run with -D eid=hot-event
\set seats random(1, 4)
BEGIN;
SELECT event_id, name, total_seats, available_seats, version, reservation_count,
       held_seats, next_expiry, now() AS db_now
  FROM events WHERE event_id = :eid \gset
\set new_available :available_seats - :seats
\set new_count :reservation_count + 1
WITH cas AS (
  UPDATE events
     SET name = :name, total_seats = :total_seats,
         available_seats = :new_available,
         reservation_count = :new_count, held_seats = :held_seats,
         next_expiry = NULLIF(:next_expiry, '')::timestamptz,
         version = version + 1, updated_at = now()
   WHERE event_id = :eid AND version = :version
  RETURNING 1)
SELECT count(*) AS ok FROM cas \gset
COMMIT;
