"""Network plumbing shared by both daemons: the asyncio loop, listeners, outgoing HTTP, TLS."""
