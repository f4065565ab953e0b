"""Helpers the tests share, one module each: api, clock, database, faults, servers."""
