"""Meters (BMC, PDU, Prometheus), the facility's PUE and the `wattwise facility` daemon."""
