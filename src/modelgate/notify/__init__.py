"""Outbound notifications (webhooks)."""
