"""SQLAlchemy Core tables, the engine, and the queries (including the compare-and-swap)."""
