-- (A) allocations as one json column, rewritten whole in the CAS.
-- Run with -D eid=hot-event -D nalloc=10|50. bump() edits partner p's taken (+seats) and,
-- half the time, partner q's taken (+1): the document sent back differs from the one read.
\set seats random(1, 4)
\set p random(1, :nalloc)
\set q (:p % :nalloc) + 1
\set two random(0, 1)
BEGIN;
SELECT event_id, name, total_seats, available_seats, version, reservation_count,
       held_seats, next_expiry, now() AS db_now, allocations
  FROM events WHERE event_id = :eid \gset
\set new_available :available_seats - :seats
\set new_count :reservation_count + 1
WITH cas AS (
  UPDATE events
     SET name = :name, total_seats = :total_seats,
         available_seats = :new_available,
         reservation_count = :new_count, held_seats = :held_seats,
         next_expiry = NULLIF(:next_expiry, '')::timestamptz,
         allocations = bump(bump(:allocations, substr(md5(:p::text), 1, 12), :seats),
                            substr(md5(:q::text), 1, 12), :two)::json,
         version = version + 1, updated_at = now()
   WHERE event_id = :eid AND version = :version
  RETURNING 1)
SELECT count(*) AS ok FROM cas \gset
COMMIT;
