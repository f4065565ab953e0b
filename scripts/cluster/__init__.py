"""A local TicketBoss cluster on loopback: pgbouncer, N gunicorn hosts, HAProxy in front."""
