"""Siyu channel adapters (one file each, behind channels.base.Channel)."""
