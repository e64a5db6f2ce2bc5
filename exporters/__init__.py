"""Exporters render Snapshots; they never read hardware and never import agent.sources."""
