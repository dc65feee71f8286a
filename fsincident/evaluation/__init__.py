"""Rule evaluation: the pure per-series state machine and the async evaluator."""
