"""Example apps built on wshub; each module docstring says how to run it."""
