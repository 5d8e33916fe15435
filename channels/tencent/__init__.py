"""Tencent Cloud SMS (TC3 signature)."""
