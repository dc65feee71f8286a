"""Alerts received from outside (Alertmanager API v2, PagerDuty Events v2): stored, expired, turned into
alert transitions."""
