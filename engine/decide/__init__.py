"""Deciding: audience → SQL (compiler), contact policies (gate), per-member decisions, dry-run and explain."""
