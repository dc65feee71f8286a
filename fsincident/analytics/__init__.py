"""Learning from incidents (issue #9): analytics over the incident history, SLA/uptime, on-call load and alert
fatigue, postmortem drafts, the capacity report, and scheduled reports (e-mail with charts) and shift summaries.

A stage like the others: it reads the durable rows the other stages wrote (incidents, timeline, outbox, notification
log, series history) and never imports another stage; the daemon injects what it needs (history ranges, source
snapshots, who is on call).
"""
