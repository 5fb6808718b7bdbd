"""``seqzoo`` command line: list / train / eval / compare / bench / reproduce / report.

Everything heavy (training, plotting, the speed harness) is imported inside the command that needs
it, so ``seqzoo list`` starts fast. Errors caused by the user's input (unknown names, keys, values,
missing files) print one line to stderr and exit with status 2; set ``SEQZOO_DEBUG=1`` to get the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from seqzoo.cli.config import ConfigError, parse_assignments, resolve_config
from seqzoo.registry_utils import UnknownNameError

USER_ERRORS = (ConfigError, UnknownNameError, ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError,
               ImportError, RuntimeError)


class CLIError(Exception):
    """An error message for the user (no traceback)."""


# ----------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------
def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return "\n".join([*lines, *(fmt.format(*r) for r in rows)])


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from seqzoo.models import list_models, model_info

        rows = []
        for name in list_models(args.pattern):
            info = model_info(name)
            rows.append([name, info["description"] + (f" ({info['paper']})" if info["paper"] else "")])
        print(_table(rows, ["model", "description"]))
    elif args.what == "tasks":
        from seqzoo.tasks import create_task, list_tasks, task_info

        rows = []
        for name in list_tasks(args.pattern):
            info = task_info(name)
            desc = info["description"].split("\n")[0]
            try:
                spec = create_task(name).spec
                kind = f"{spec.input_kind}->{spec.output_kind}, {spec.primary_metric}"
            except Exception:  # a task whose defaults need data still lists
                kind = ""
            rows.append([name, kind, desc])
        print(_table(rows, ["task", "kind, metric", "description"]))
    else:
        from seqzoo.experiments.catalog import describe_all, format_experiments

        if getattr(args, "json", False):
            print(json.dumps(describe_all(args.pattern), indent=1))
        else:
            print(format_experiments(args.pattern))
    return 0


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    assignments = parse_assignments(args.overrides)
    if args.data_dir:
        os.environ["SEQZOO_DATA"] = str(args.data_dir)
    cfg = resolve_config(args.model, args.task, assignments, seeds=args.seeds, data_dir=args.data_dir)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0
    from seqzoo.experiments.card import Stat
    from seqzoo.training import train

    results = []
    for seed in cfg.seeds:
        res = train(cfg.for_seed(seed), out=args.out, resume=args.resume,
                    run_name=_run_name(args.name, seed, len(cfg.seeds)))
        results.append(res)
        print(f"seed {seed}: {res.status}, {res.steps} steps (best {res.best_step}), "
              f"valid {_fmt_metrics(res.valid)}, test {_fmt_metrics(res.test)}, {res.wall_time:.1f} s -> {res.run_dir}",
              flush=True)
    rows = []
    for split in ("valid", "test"):
        names = sorted({m for r in results for m in getattr(r, split)})
        for m in names:
            vals = [getattr(r, split)[m] for r in results if m in getattr(r, split)]
            st = Stat.of(vals)
            rows.append([f"{split} {m}", str(st.n), f"{st.mean:.4g} ± {st.std:.2g}"])
    if rows:
        print()
        print(_table(rows, ["metric", "n", "mean ± std over seeds"]))
    return 0


def _run_name(name: str | None, seed: int, n: int) -> str | None:
    if name is None:
        return None
    return f"{name}-s{seed}" if n > 1 else name


def _fmt_metrics(d: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in d.items()) if d else "-"


# ----------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not a run directory (no config.json)")
    from seqzoo.training import evaluate_run

    metrics = evaluate_run(run, split=args.split, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{run} ({args.split})")
        for k, v in metrics.items():
            print(f"  {k}: {v:.6g}")
    return 0


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from seqzoo.experiments.compare import format_table, group_runs, load_runs, plot_groups

    records = load_runs(args.runs, index=args.index)
    groups = group_runs(records, args.metric, args.split)
    print(format_table(groups, args.metric, args.split))
    if args.plot:
        path = plot_groups(groups, args.metric, args.plot, split=args.curve_split, band=args.band)
        print(f"plot: {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# bench / reproduce / report
# ----------------------------------------------------------------------------------------------
def cmd_bench(argv: list[str]) -> int:
    try:
        from seqzoo.experiments import bench
    except ModuleNotFoundError as exc:
        if exc.name == "seqzoo.experiments.bench":
            raise CLIError("the speed harness seqzoo.experiments.bench is not installed in this version") from None
        raise
    rc = bench.main(argv)
    return int(rc or 0)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from seqzoo.experiments import get_experiment
    from seqzoo.experiments.runner import reproduce

    get_experiment(args.name).scale(args.scale)  # validate before any work
    report = reproduce(args.name, scale=args.scale, out=args.out, workers=args.workers, executor=args.executor,
                       resume=not args.no_resume, progress=not args.no_progress)
    return 1 if report.failures else 0


class _ReproduceHelp(argparse.Action):
    """``reproduce --help``: the help with every card's expected wall time (cards load only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: object = None) -> None:
        from seqzoo.experiments.catalog import expected_times

        parser.epilog = expected_times()
        parser.print_help()
        parser.exit()


def cmd_report(args: argparse.Namespace) -> int:
    from seqzoo.experiments.report import render_report

    path = render_report(args.out, args.output, echo=print)
    print(f"report: {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqzoo", description="Recurrent and long-range sequence models: train, "
                                "compare, benchmark and check papers' claims.")
    p.add_argument("--version", action="version", version=f"seqzoo {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sp = sub.add_parser("list", help="list registered models, tasks or experiments")
    sp.add_argument("what", choices=["models", "tasks", "experiments"])
    sp.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'lstm*'")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("train", help="train a model on a task for one or more seeds",
                        description="key=value pairs go to the model, the task or TrainConfig by name "
                                    "(prefix model./task./train. when a key is ambiguous); values are JSON "
                                    "literals where possible, else strings.")
    sp.add_argument("--model", required=True)
    sp.add_argument("--task", required=True)
    sp.add_argument("overrides", nargs="*", metavar="key=value")
    sp.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run one after another (default 0)")
    sp.add_argument("--out", default="runs", help="output folder (runs and index.sqlite)")
    sp.add_argument("--name", default=None, help="run directory name (default: derived from the config)")
    sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    sp.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    sp.add_argument("--data-dir", default=None, help="folder of real data sets (sets SEQZOO_DATA)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="evaluate a finished run's best weights on a split")
    sp.add_argument("run", help="run directory")
    sp.add_argument("--split", default="test", choices=["train", "valid", "test"])
    sp.add_argument("--data-dir", default=None)
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("compare", help="table (and plot) of a metric over runs grouped by configuration")
    sp.add_argument("runs", nargs="*", help="run directories, glob patterns or output folders")
    sp.add_argument("--metric", required=True)
    sp.add_argument("--split", default="test", choices=["valid", "test"], help="split of the table's metric")
    sp.add_argument("--plot", default=None, help="write learning curves to this PNG")
    sp.add_argument("--curve-split", default="valid", choices=["train", "valid"], help="split of the curves")
    sp.add_argument("--band", default="minmax", choices=["minmax", "std"], help="band around the mean curve")
    sp.add_argument("--index", default=None, help="read runs from this index.sqlite instead of directories")
    sp.set_defaults(func=cmd_compare)

    sub.add_parser("bench", help="speed harness (arguments go to seqzoo.experiments.bench)", add_help=False)

    sp = sub.add_parser("reproduce", help="run an experiment card and check its claims", add_help=False,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Train a card's grid at one scale and judge its claims (`seqzoo list "
                                    "experiments` shows the cards). At scale tiny the verdicts only check the "
                                    "plumbing; they are not results.")
    sp.add_argument("-h", "--help", action=_ReproduceHelp, help="show this help (with expected times) and exit")
    sp.add_argument("name", help="experiment card (see `seqzoo list experiments`)")
    sp.add_argument("--scale", default="small", choices=["tiny", "small", "paper"],
                    help="tiny: plumbing check in seconds; small: the measured reproduction (default: small)")
    sp.add_argument("--out", default="runs")
    sp.add_argument("--workers", type=int, default=None, help="parallel runs (default: the card's setting)")
    sp.add_argument("--executor", default="local", choices=["local", "ray"])
    sp.add_argument("--no-resume", action="store_true", help="train every run again even if it is in the index")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_reproduce)

    sp = sub.add_parser("report", help="render every card with results to Markdown with plots")
    sp.add_argument("--out", default="runs", help="folder holding index.sqlite")
    sp.add_argument("--output", default=None, help="Markdown page to write (default: <out>/results.md)")
    sp.set_defaults(func=cmd_report)
    return p


def _version() -> str:
    try:
        import seqzoo

        return seqzoo.__version__
    except Exception:  # pragma: no cover
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seqzoo`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEQZOO_DEBUG", "") not in ("", "0")
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"seqzoo: error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        if debug:
            raise
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"seqzoo: error: {msg.splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqzoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
