"""Exporters render Snapshots; they never read hardware and never import wattwise.sources."""
