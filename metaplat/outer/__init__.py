"""Outer loops: one module per method, no Tune imports."""
