"""Incidents: the pure named transitions, and the service that persists them with their outbox rows."""
