"""``seqzoo`` command line: list / train / eval / translate / compare / bench / reproduce / report.

Everything heavy (torch, training, plotting, the speed harness) is imported inside the command that needs it, so
``seqzoo --help`` and ``--version`` start without torch. A user error (``seqzoo.errors.SeqzooError``, an argument
error, a file that cannot be opened) prints one line to stderr and exits with status 2; any other exception is a
bug and keeps its traceback. ``SEQZOO_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from seqzoo._version import __version__
from seqzoo.cli.config import parse_assignments, resolve_config
from seqzoo.errors import RunError, SeqzooError

# optional packages -> the extra that installs them (pyproject.toml [project.optional-dependencies])
OPTIONAL_EXTRAS = {"safetensors": "train", "tqdm": "train", "tensorboard": "train", "matplotlib": "train",
                   "sklearn": "train", "scipy": "train", "statsmodels": "forecast", "numba": "fast",
                   "aeon": "timeseries", "pyts": "timeseries", "ray": "ray", "sentencepiece": "translate",
                   "sacrebleu": "translate"}
# OSErrors that are about the user's files even when they carry no file name
FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
# Plain ValueError/KeyError are still raised for user mistakes in places not yet converted to seqzoo.errors;
# they print as one line until then (RuntimeError, TypeError, ImportError ... keep their traceback).


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def _terminal_width() -> int | None:
    """Columns of the terminal (or $COLUMNS); None when stdout is not a terminal (pipes get whole lines)."""
    cols = shutil.get_terminal_size(fallback=(0, 0)).columns
    return cols or None


def _table(rows: list[list[str]], header: list[str], width: int | None = None) -> str:
    """Left-aligned columns; with ``width``, columns are cut (with "…") from the right until each line fits.

    The first column (the name) is never cut, and no column is cut below 12 characters.
    """
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        for i in reversed(range(1, len(widths))):
            cut = max(0, min(excess, widths[i] - 12))
            widths[i] -= cut
            excess -= cut

    def line(cells: Sequence[str]) -> str:
        cut = [c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(cells, widths)]
        return "  ".join(f"{c:<{w}}" for c, w in zip(cut, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# ----------------------------------------------------------------------------------------------
# list
# ----------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "experiments":  # one block per card (claims, models, tasks, expected times): catalog.py
        from seqzoo.experiments.catalog import describe_all, format_experiments

        if args.json:
            print(json.dumps(describe_all(args.pattern), indent=2, default=str))
        else:
            print(format_experiments(args.pattern, width=_terminal_width()))
        return 0
    header, rows, records = {"models": _list_models, "tasks": _list_tasks}[args.what](args.pattern)
    if args.json:
        print(json.dumps(records, indent=2, default=str))
    else:
        print(_table(rows, header, width=_terminal_width()))
    return 0


def _list_models(pattern: str | None) -> tuple[list[str], list[list[str]], list[dict]]:
    from seqzoo.models import list_models, model_info

    rows, records = [], []
    for name in list_models(pattern):
        info = model_info(name)
        n = _param_count(name)
        rows.append([name, _fmt_count(n), info["description"] + (f" ({info['paper']})" if info["paper"] else "")])
        records.append({"name": name, "params": n, "description": info["description"], "paper": info["paper"],
                        "defaults": info.get("defaults", {})})
    return ["model", "params", "description"], rows, records


def _param_count(name: str) -> int | None:
    """Parameters of the preset built at its default sizes on the CPU (None when the defaults cannot build)."""
    from seqzoo.models import create_model

    try:
        model = create_model(name)
    except Exception:  # noqa: BLE001 - a preset whose defaults need a task's sizes still lists
        return None
    return sum(p.numel() for p in model.parameters())


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _list_tasks(pattern: str | None) -> tuple[list[str], list[list[str]], list[dict]]:
    from seqzoo.tasks import list_tasks, task_info

    rows, records = [], []
    for name in list_tasks(pattern):  # static class information only: no task is built (some would read data)
        info = task_info(name)
        rows.append([name, info.get("paper") or "-", info["description"].split("\n")[0]])
        records.append(info)
    return ["task", "paper", "description"], rows, records


def cmd_train(args: argparse.Namespace) -> int:
    with _data_env(args.data_dir):
        return _train(args)


@contextlib.contextmanager
def _data_env(data_dir: str | None):
    """``SEQZOO_DATA=data_dir`` for the duration of one command (tasks without a ``data_dir`` argument read it),
    restored afterwards so an in-process ``main()`` leaves the caller's environment as it was."""
    old = os.environ.get("SEQZOO_DATA")
    if data_dir:
        os.environ["SEQZOO_DATA"] = str(data_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SEQZOO_DATA", None)
        else:
            os.environ["SEQZOO_DATA"] = old


def _train(args: argparse.Namespace) -> int:
    assignments = parse_assignments(args.overrides)
    cfg = resolve_config(args.model, args.task, assignments, seeds=args.seeds, data_dir=args.data_dir)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, default=str))
        return 0
    from seqzoo.experiments.card import Stat
    from seqzoo.training import train

    _log_to_stderr()  # progress lines off a terminal (training/progress.py)
    main_rank = _is_main_rank()
    results = []
    for seed in cfg.seeds:
        res = train(cfg.for_seed(seed), out=args.out, resume=args.resume,
                    run_name=_run_name(args.name, seed, len(cfg.seeds)))
        results.append(res)
        if main_rank:
            print(f"seed {seed}: {res.status}, {res.steps} steps (best {res.best_step}), valid "
                  f"{_fmt_metrics(res.valid)}, test {_fmt_metrics(res.test)}, {res.wall_time:.1f} s -> {res.run_dir}",
                  flush=True)
    rows = []
    for split in ("valid", "test"):
        names = sorted({m for r in results for m in getattr(r, split)})
        for m in names:
            vals = [getattr(r, split)[m] for r in results if m in getattr(r, split)]
            st = Stat.of(vals)
            rows.append([f"{split} {m}", str(st.n), f"{st.mean:.4g} ± {st.std:.2g}"])
    if rows and main_rank:
        print()
        print(_table(rows, ["metric", "n", "mean ± std over seeds"]))
    return 0


def _is_main_rank() -> bool:
    """False in the non-zero ranks of a ``torchrun`` job (WORLD_SIZE > 1), so only rank 0 prints summaries."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0
    except ValueError:  # malformed variables: training itself reports them
        return True


def _log_to_stderr() -> None:
    """Show seqzoo's INFO log lines (periodic progress off a terminal, run notes) on stderr, once."""
    logger = logging.getLogger("seqzoo")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not the one at creation)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores it
        pass


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
    runs = [Path(r) for r in args.runs]
    for run in runs:  # check every run before evaluating any
        if not (run / "config.json").is_file():
            raise RunError(f"{run} is not a run directory (no config.json)")
    from seqzoo.training import evaluate_run
    from seqzoo.training.runs import run_data_files

    for run in runs:  # a run may come from elsewhere: say which data it will read before reading it
        files = run_data_files(run, args.data_dir)
        if files:
            print(f"{run}: reads {', '.join(files)}", file=sys.stderr)
    results = {str(run): evaluate_run(run, split=args.split, data_dir=args.data_dir) for run in runs}
    if args.json:  # one run: its metrics; several: {run directory: metrics}
        print(json.dumps(next(iter(results.values())) if len(results) == 1 else results))
    elif len(results) == 1:
        run, metrics = next(iter(results.items()))
        print(f"{run} ({args.split})")
        for k, v in metrics.items():
            print(f"  {k}: {v:.6g}")
    else:
        names = list(dict.fromkeys(m for metrics in results.values() for m in metrics))
        rows = [[run, *(f"{metrics[m]:.6g}" if m in metrics else "-" for m in names)]
                for run, metrics in results.items()]
        print(_table(rows, ["run", *(f"{args.split} {m}" for m in names)]))
    return 0


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    from seqzoo.experiments.compare import format_table, group_runs, load_runs, plot_groups

    records = load_runs(args.runs, index=args.index)
    # a train-only metric (loss) has no table but can still be plotted with --curve-split train
    groups = group_runs(records, args.metric, args.split, require=not (args.plot and args.curve_split == "train"))
    if any(g.stat is not None for g in groups):
        print(format_table(groups, args.metric, args.split))
    else:
        print(f"(no {args.split} {args.metric} in the runs' results: no table)")
    if args.plot:
        path = plot_groups(groups, args.metric, args.plot, split=args.curve_split, band=args.band)
        print(f"plot: {path}")  # the file written (".png" is added to a name without a suffix)
    return 0


# ----------------------------------------------------------------------------------------------
# bench / reproduce / report
# ----------------------------------------------------------------------------------------------
def cmd_bench(argv: list[str]) -> int:
    try:
        from seqzoo.experiments import bench
    except ModuleNotFoundError as exc:
        if exc.name == "seqzoo.experiments.bench":
            raise SeqzooError("the speed harness seqzoo.experiments.bench is not installed in this version") from None
        raise
    rc = bench.main(argv)
    return int(rc or 0)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from seqzoo.experiments import get_experiment
    from seqzoo.experiments.runner import reproduce

    get_experiment(args.name).scale(args.scale)  # validate before any work
    report = reproduce(args.name, scale=args.scale, out=args.out, workers=args.workers, executor=args.executor,
                       resume=not args.no_resume, progress=not args.no_progress, shared_dir=args.shared_dir)
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
    if args.pages is not None:
        from seqzoo.experiments.scoreboard import write_scoreboard

        print(f"scoreboard: {write_scoreboard(args.pages, args.output)}")
        return 0
    from seqzoo.experiments.report import render_report

    path = render_report(args.out, args.output, echo=print)
    print(f"report: {path}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help, except when the default is None or False (nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``seqzoo train: error: ... (see seqzoo train --help)`` instead of the usage
    block, like every other user error of the command line (subcommand parsers are of this class too)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter  # every option's help shows its default
    p = _Parser(prog="seqzoo", formatter_class=fmt,
                                description="Recurrent and long-range sequence models: train, compare, benchmark "
                                "and check papers' claims. `seqzoo list models|tasks|experiments` shows the names.")
    p.add_argument("--version", action="version", version=f"seqzoo {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sp = sub.add_parser("list", formatter_class=fmt, help="list registered models, tasks or experiments")
    sp.add_argument("what", choices=["models", "tasks", "experiments"])
    sp.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'lstm*'")
    sp.add_argument("--json", action="store_true", help="print the full records as JSON")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("train", formatter_class=fmt, help="train a model on a task for one or more seeds",
                        description="key=value pairs (anywhere on the line) go to the model, the task or TrainConfig "
                                    "by name (prefix model./task./train. when a key is ambiguous); values are JSON "
                                    "literals where possible, else strings.")
    sp.add_argument("--model", required=True, help="model preset (see `seqzoo list models`)")
    sp.add_argument("--task", required=True, help="task (see `seqzoo list tasks`)")
    sp.add_argument("overrides", nargs="*", metavar="key=value", help="model, task or train setting")
    sp.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds to run one after another (default: seed=... or 0)")
    sp.add_argument("--out", default="runs", help="output folder (runs and index.sqlite)")
    sp.add_argument("--name", default=None, help="run directory name (default: <task>-<model>-s<seed>-<hash>)")
    sp.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    sp.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    sp.add_argument("--data-dir", default=None, help="folder of real data sets (sets SEQZOO_DATA)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", formatter_class=fmt, help="evaluate finished runs' best weights on a split")
    sp.add_argument("runs", nargs="+", metavar="run", help="run directories (several print a table)")
    sp.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split to evaluate")
    sp.add_argument("--data-dir", default=None, help="folder of real data sets")
    sp.add_argument("--json", action="store_true",
                    help="print JSON: the metrics of one run, or {run directory: metrics} for several")
    sp.set_defaults(func=cmd_eval)

    from seqzoo.cli.translate import add_parser as add_translate  # noqa: PLC0415  (argparse only, no torch)

    add_translate(sub, fmt)

    sp = sub.add_parser("compare", formatter_class=fmt,
                        help="table (and plot) of a metric over runs grouped by configuration")
    sp.add_argument("runs", nargs="*", help="run directories, glob patterns or output folders")
    sp.add_argument("--metric", required=True, help="metric name, e.g. mse or accuracy (loss with --curve-split "
                                                     "train)")
    sp.add_argument("--split", default="test", choices=["valid", "test"], help="split of the table's metric")
    sp.add_argument("--plot", default=None, help="write learning curves (one panel per task) to this PNG")
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
    sp.add_argument("--scale", default="small",
                    help="tiny: plumbing check in seconds; small: the measured reproduction (<= 15 min); medium: a "
                         "longer budget where small cannot decide (<= 60 min); paper: the published setting "
                         "(default: small)")
    sp.add_argument("--out", default="runs")
    sp.add_argument("--workers", type=int, default=None, help="parallel runs (default: the card's setting)")
    sp.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="local: this machine; ray: tasks on the Ray cluster RAY_ADDRESS names, runs shipped back "
                         "into --out (docs/training.md)")
    sp.add_argument("--shared-dir", default=None, metavar="PATH",
                    help="with --executor ray: a folder every node mounts at the same path; tasks write their runs "
                         "there and the driver copies them into --out (default: runs are shipped back as files)")
    sp.add_argument("--no-resume", action="store_true", help="train every run again even if it is in the index")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_reproduce)

    sp = sub.add_parser("report", formatter_class=fmt, help="render every card with results to Markdown with plots")
    sp.add_argument("--out", default="runs", help="folder holding index.sqlite")
    sp.add_argument("--output", default=None,
                    help="Markdown page to write (default: <out>/results.md, or <pages>/README.md with --pages)")
    sp.add_argument("--pages", default=None, metavar="DIR",
                    help="instead: write the scoreboard of the committed result pages in DIR (docs/results)")
    sp.set_defaults(func=cmd_report)
    return p


def split_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split a ``train`` command line into (options and arguments, ``key=value`` overrides).

    A token is an override when it contains ``=``, does not start with ``-`` and is not the value of an option
    that takes one (``--name a=b``), so overrides may stand anywhere: before, between or after the options,
    also right after ``--seeds 0 1``.
    """
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    options = sub.choices["train"]._option_string_actions  # noqa: SLF001
    rest: list[str] = []
    overrides: list[str] = []
    takes_value = False
    for i, tok in enumerate(argv):
        if takes_value:
            rest.append(tok)
            takes_value = False
        elif tok == "--":
            rest.extend(argv[i:])
            break
        elif tok.startswith("-"):
            rest.append(tok)
            matches = [a for o, a in options.items() if o == tok] or [a for o, a in options.items()
                                                                     if o.startswith(tok) and tok.startswith("--")]
            takes_value = len({id(a) for a in matches}) == 1 and matches[0].nargs is None and "=" not in tok
        elif "=" in tok:
            overrides.append(tok)
        else:
            rest.append(tok)
    return rest, overrides


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    command = next((i for i, tok in enumerate(argv) if not tok.startswith("-")), None)
    if command is None or argv[command] != "train":
        return parser.parse_args(argv)
    rest, overrides = split_overrides(parser, argv[command + 1:])
    args = parser.parse_args([*argv[:command + 1], *rest])
    args.overrides = [*overrides, *args.overrides]
    return args


def _missing_optional_package(exc: BaseException) -> str | None:
    """The optional package whose absence caused ``exc`` (also when re-raised as an ImportError), else None."""
    seen: BaseException | None = exc
    while isinstance(seen, ImportError):
        top = (seen.name or "").split(".")[0] if isinstance(seen, ModuleNotFoundError) else ""
        if top in OPTIONAL_EXTRAS:
            return top
        seen = seen.__cause__ or seen.__context__
    return None


def _one_line(exc: BaseException) -> str | None:
    """The one-line message of a user error, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, SeqzooError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FILE_ERRORS):
        return str(exc)
    package = _missing_optional_package(exc)
    if package is not None:
        return f"this needs the optional package {package!r}: pip install 'seqzoo[{OPTIONAL_EXTRAS[package]}]'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seqzoo`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEQZOO_DEBUG", "") not in ("", "0")
    try:
        if argv and argv[0] == "bench":
            rc = cmd_bench(argv[1:])
        else:
            args = _parse(argv)
            rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return rc
    except BrokenPipeError:  # `seqzoo list models | head -1`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, what the shell reports for a process killed by it
    except KeyboardInterrupt:
        print("seqzoo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _one_line(exc)
        if message is None or debug:
            raise
        print(f"seqzoo: error: {message or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
