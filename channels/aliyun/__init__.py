"""Aliyun: SMS, voice notifications and the outbound robot, on one RPC signature."""
