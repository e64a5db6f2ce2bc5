"""The agent's wiring, its tick and its runtime: what turns the stages into a daemon."""
