"""Backends: one ``JobBackend`` protocol; one module per system (REST, operator, Ververica)."""
