"""On-call and escalation: ``oncall`` (pure: who is on call at t), ``policy`` (pure: which step is due), services."""
