"""``fsincident test`` (promtool-style rule unit tests) and ``fsincident backtest`` (replay rules over history)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fsincident.core import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def cmd_test(args: argparse.Namespace) -> int:
    from fsincident.evaluation.ruletest import run_file

    code = EXIT_OK
    for path in args.files:
        res = run_file(path, strict=args.strict)
        print(f"Unit Testing: {path}")
        if res.problems:
            print("  INVALID:")
            for p in res.problems:
                print(f"    {p}")
            code = max(code, EXIT_USAGE)
        elif res.failures:
            print("  FAILED:")
            for block in res.failures:
                print(_indent(block, "    "))
            code = max(code, EXIT_FAIL)
        else:
            print(f"  SUCCESS ({res.cases} alert test{'s' if res.cases != 1 else ''})")
        if res.skipped and not args.strict:
            print(
                f"  skipped {res.skipped} promql_expr_test case{'s' if res.skipped != 1 else ''} "
                "(PromQL is not supported; --strict makes this a failure)"
            )
        print()
    return code


def _usage(msg: str) -> int:
    print(f"fsincident backtest: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_backtest(args: argparse.Namespace) -> int:
    from fsincident.core import parse_duration
    from fsincident.evaluation import backtest as bt
    from fsincident.evaluation.replay import ReplayError, load_rule_files

    if (args.csv is None) == (args.prometheus is None):
        return _usage("give either --csv FILE --metric NAME or --prometheus URL --start T --end T --step D")
    if args.csv is not None:
        extra = [f for f in ("start", "end", "step") if getattr(args, f) is not None]
        if extra:
            return _usage(f"--{extra[0]} goes with --prometheus (a CSV is replayed row by row)")
        if not args.metric:
            return _usage("--csv needs --metric NAME (the metric the CSV's values are)")
    else:
        if args.metric or args.labels:
            return _usage("--metric and --labels go with --csv (Prometheus series keep their own names and labels)")
        missing = [f for f in ("start", "end", "step") if getattr(args, f) is None]
        if missing:
            return _usage(f"--prometheus needs --{missing[0]}")
        try:
            bt.split_url(args.prometheus)
        except bt.BacktestError as e:
            return _usage(str(e))
    try:
        groups = load_rule_files(args.rule_files)
    except ConfigError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        print(f"{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''} found", file=sys.stderr)
        return EXIT_USAGE
    rules = [r for g in groups for r in g.rules]
    if not rules:
        return _usage("the rule files have no rules")
    metrics = bt.metrics_read(rules)
    try:
        if args.csv is not None:
            try:
                labels = bt.parse_labels(args.labels or [])
            except ValueError as e:
                return _usage(f"--labels: {e}")
            rows = bt.read_csv(args.csv)
            for r in rules:
                other = [m for m in bt.metrics_read([r]) if m != args.metric]
                if other:
                    print(
                        f"warning: {r.file}:{r.line}: {r.key} reads {', '.join(other)}, which the CSV does not provide",
                        file=sys.stderr,
                    )
            interval = min((g.interval.total_seconds() for g in groups), default=15.0)
            result = bt.run(rules, bt.csv_frames(rows, args.metric, labels), interval=interval)
        else:
            try:
                start, end = bt.parse_time(args.start), bt.parse_time(args.end)
            except ValueError as e:
                return _usage(str(e))
            try:
                step = parse_duration(args.step).total_seconds()
            except ValueError as e:
                return _usage(f"--step: {e}")
            if step <= 0:
                return _usage("--step must be positive")
            if end < start:
                return _usage("--end is before --start")
            warm = bt.warmup_seconds(rules)
            first = start - (warm // step + 1) * step if warm > 0 else start
            try:
                times = bt.step_times(start, end, step)
                warm_times = bt.step_times(first, start - step, step) if first < start else []
            except bt.BacktestError as e:
                return _usage(str(e))
            data, empty = bt.fetch_prometheus(args.prometheus, metrics, first, end, step)
            for m in empty:
                print(f"warning: Prometheus has no series of {m} in the range", file=sys.stderr)
            frames = ((t, data.get(round(t * 1000), {})) for t in [*warm_times, *times])
            # Prometheus applied its own lookback to every step: a series absent at a step is gone.
            result = bt.run(rules, frames, interval=step, lookback=step / 2, evaluate_from=times[0] if times else end)
    except bt.BacktestError as e:
        print(f"fsincident backtest: {e}", file=sys.stderr)
        return EXIT_USAGE if args.csv is not None else EXIT_FAIL
    except ReplayError as e:
        print(f"fsincident backtest: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for line in bt.format_json(result):
            print(line)
    else:
        print(bt.format_table(result))
    for warning, at in result.warnings.items():
        print(f"warning (first at {bt.iso_time(at)}): {warning}", file=sys.stderr)
    for err, at in result.errors.items():
        print(f"error (first at {bt.iso_time(at)}): {err}", file=sys.stderr)
    return EXIT_FAIL if result.errors else EXIT_OK


def register(sub: Any) -> None:
    """Add the ``test`` and ``backtest`` subcommands to the CLI's subparsers."""
    sp = sub.add_parser(
        "test",
        help="run rule unit tests (promtool test rules format); exit 1 on a failure",
        description="Run rule unit tests written in the format of Prometheus' `promtool test rules`; rule_files "
        "name fsincident rule files (relative to the test file). Exit 0 when all pass, 1 when a test fails, "
        "2 when a file is invalid.",
    )
    sp.add_argument("files", nargs="+", metavar="FILE", help="test files")
    sp.add_argument("--strict", action="store_true", help="fail on promql_expr_test cases (which cannot run)")
    sp.set_defaults(fn=cmd_test)

    sp = sub.add_parser(
        "backtest",
        help="replay rules over history (CSV or Prometheus) and print when alerts would have fired",
        description="Replay rules over history and print when each alert would have fired and resolved. "
        "With --csv the rules are evaluated at every row; with --prometheus at every step from --start to --end.",
    )
    sp.add_argument("rule_files", nargs="+", metavar="RULE_FILE", help="fsincident rule files")
    sp.add_argument("--csv", metavar="FILE", help="a CSV with the header timestamp,value (one series)")
    sp.add_argument("--metric", metavar="NAME", help="--csv: the metric name of the CSV's values")
    sp.add_argument(
        "--labels", nargs="+", action="extend", metavar="K=V", help="--csv: the series' labels (name=value ...)"
    )
    sp.add_argument("--prometheus", metavar="URL", help="read history from this Prometheus (range queries)")
    sp.add_argument("--start", metavar="T", help="--prometheus: Unix seconds, ISO 8601, or now-7d")
    sp.add_argument("--end", metavar="T", help="--prometheus: Unix seconds, ISO 8601, or now")
    sp.add_argument("--step", metavar="D", help="--prometheus: evaluation step, e.g. 15s")
    sp.add_argument("--json", action="store_true", help="one JSON line per transition instead of a table")
    sp.set_defaults(fn=cmd_backtest)
