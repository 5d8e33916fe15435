"""Loopback fake vendors: one real HTTP server per vendor API, as strict as the vendor."""
