"""``seqzoo translate RUN [--beam N] [--input FILE | stdin] [--ref FILE]``: translate raw sentences with a run.

The run folder holds everything needed: the model (``model.safetensors`` + ``model.json``), the decoding settings
(``config.json``: the translation task's beam, alpha, beta, max_len_ratio, max_len_extra; ``--beam``, ``--alpha``,
``--beta`` override them) and the sentencepiece model (``spm.model``); no data folder is read. One output line per
input line on stdout; with ``--ref`` the sacrebleu BLEU, chrF and length ratio against the reference file go to
stderr. A progress line or bar on stderr for long inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqzoo.errors import DataError, RunError


def _lines(path: str | None) -> tuple[list[str], str]:
    """Input sentences from a file or stdin (empty lines and bad UTF-8 name the file and line)."""
    from seqzoo.tasks.data_files import data_error, decode_text
    from seqzoo.tasks.translation import read_lines

    if path is not None and path != "-":
        return read_lines(Path(path)), path
    text = decode_text(sys.stdin.buffer.read(), "<stdin>")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            raise data_error("<stdin>", "empty line (expected one sentence per line)", i)
    return [line.rstrip("\r") for line in lines], "<stdin>"


def cmd_translate(args: argparse.Namespace) -> int:
    from seqzoo.models.seq2seq.decoding import DecodeConfig
    from seqzoo.tasks.translation import SPM_FILE, Wordpieces, corpus_scores, read_lines
    from seqzoo.training.progress import Progress
    from seqzoo.training.runs import load_run, read_config

    run = Path(args.run)
    cfg = read_config(run)
    if cfg["task"] != "translation":
        raise RunError(f"{run} is a run of task {cfg['task']!r}; seqzoo translate needs a translation run")
    if not (run / SPM_FILE).is_file():
        raise RunError(f"{run / SPM_FILE} is missing: the run folder must carry its sentencepiece model")
    ta = cfg["task_args"]
    decoding = DecodeConfig(beam=args.beam if args.beam is not None else int(ta.get("beam", 5)),
                            alpha=args.alpha if args.alpha is not None else float(ta.get("alpha", 0.2)),
                            beta=args.beta if args.beta is not None else float(ta.get("beta", 0.2)),
                            max_len_ratio=float(ta.get("max_len_ratio", 1.5)),
                            max_len_extra=int(ta.get("max_len_extra", 10)))
    refs = read_lines(Path(args.ref)) if args.ref else None
    lines, source = _lines(args.input)
    if refs is not None and len(refs) != len(lines):
        raise DataError(f"{args.ref}: {len(refs)} reference lines, but {source} has {len(lines)} sentences")
    wordpieces = Wordpieces.load(run / SPM_FILE)
    model = load_run(run)
    from torch.nn.utils import parametrize

    from seqzoo.models.seq2seq.base import EOS
    from seqzoo.models.seq2seq.decoding import translate_sorted

    bar = Progress(len(lines), desc="translate", unit="sentence", enabled=len(lines) > 64)
    try:
        with parametrize.cached():
            ids = translate_sorted(model, [s + [EOS] for s in wordpieces.encode(lines)], decoding,
                                   batch_size=args.batch_size, progress=bar.update)
    finally:
        bar.close()
    hyps = wordpieces.decode(ids)
    for h in hyps:
        print(h)
    if refs is not None:
        s = corpus_scores(hyps, refs)
        print(f"BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}  length ratio {s['len_ratio']:.3f}  (sacrebleu, "
              f"{len(hyps)} sentences, beam {decoding.beam}, alpha {decoding.alpha}, beta {decoding.beta})",
              file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction, fmt: type) -> None:
    sp = sub.add_parser("translate", formatter_class=fmt, help="translate sentences with a trained translation run")
    sp.add_argument("run", help="run directory of a translation run")
    sp.add_argument("--input", default=None, help="file of sentences, one per line (default: stdin)")
    sp.add_argument("--ref", default=None, help="reference translations: print sacrebleu BLEU/chrF to stderr")
    sp.add_argument("--beam", type=int, default=None, help="beam size, 1 = greedy (default: the run's)")
    sp.add_argument("--alpha", type=float, default=None, help="length penalty weight (default: the run's)")
    sp.add_argument("--beta", type=float, default=None, help="coverage penalty weight (default: the run's)")
    sp.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    sp.set_defaults(func=cmd_translate)
