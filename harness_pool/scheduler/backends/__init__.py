"""Backends: one ``JobBackend`` protocol, one module per system (Flink REST, operator, Ververica)."""
