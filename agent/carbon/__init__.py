"""Grid carbon intensity over time, from a chain of providers with fallback."""
