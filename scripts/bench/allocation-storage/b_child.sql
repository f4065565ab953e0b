-- (B) allocations as child rows: read all, re-read version, CAS, then 1-2 child UPDATEs
-- (partner p's taken +seats; half the time partner q's taken +1).
-- Run with -D eid=hot-event -D nalloc=10|50
\set seats random(1, 4)
\set p random(1, :nalloc)
\set q (:p % :nalloc) + 1
\set two random(0, 1)
BEGIN;
SELECT event_id, name, total_seats, available_seats, version, reservation_count,
       held_seats, next_expiry, now() AS db_now
  FROM events WHERE event_id = :eid \gset
\set new_available :available_seats - :seats
\set new_count :reservation_count + 1
SELECT partner_id, seats, taken, held, overflow, max_held, closed
  FROM allocations WHERE event_id = :eid ORDER BY partner_id;
SELECT version AS reread_version FROM events WHERE event_id = :eid \gset
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
\if :ok
UPDATE allocations SET taken = taken + :seats
 WHERE event_id = :eid AND partner_id = substr(md5(:p::text), 1, 12);
\if :two
UPDATE allocations SET taken = taken + 1
 WHERE event_id = :eid AND partner_id = substr(md5(:q::text), 1, 12);
\endif
\endif
COMMIT;
