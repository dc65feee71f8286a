"""Notification delivery: the durable outbox, rendering, and channel kinds (apprise)."""
