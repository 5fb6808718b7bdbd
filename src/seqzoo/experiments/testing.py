"""Test helpers for cards: judge a claim on fabricated rows, and run a card's tiny scale end to end.

A card's tests fabricate the results a claim should hold (and not hold) on, with the numbers written out::

    from seqzoo.experiments.testing import judge
    out = judge("bln", "bln_ge_ln_b25", [{"norm": "bln", "B": 25, "accuracy": [0.91, 0.92]},
                                          {"norm": "ln", "B": 25, "accuracy": 0.90}])
    assert out.held is True

``run_tiny`` trains the tiny grid into a temporary folder and checks what every card must satisfy there: every
run finished and is in the results, every claim and observation was judged without raising, the summary and plots
were written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seqzoo.experiments.card import Claim, ClaimResult, Results
from seqzoo.experiments.registry import get_experiment


def claim(card: str, name: str) -> Claim:
    """The claim or observation ``name`` of card ``card`` (an unknown name fails with the card's names)."""
    c = get_experiment(card)
    claims = {x.name: x for x in [*c.claims, *c.observations]}
    if name not in claims:
        raise KeyError(f"card {card!r} has no claim {name!r}; claims and observations: {sorted(claims)}")
    return claims[name]


def results(card: str, rows: Sequence[Mapping[str, Any]], metric: str | None = None,
            split: str | None = None) -> Results:
    """``Results.from_records`` with the card's metric and split (``rows``: labels plus the metric's value(s))."""
    c = get_experiment(card)
    return Results.from_records([dict(r) for r in rows], metric or c.metric, split or c.split)


def judge(card: str, name: str, rows: Sequence[Mapping[str, Any]] | Results, metric: str | None = None,
          split: str | None = None) -> ClaimResult:
    """The verdict of claim ``name`` on fabricated ``rows`` (or on ready ``Results``)."""
    res = rows if isinstance(rows, Results) else results(card, rows, metric, split)
    return claim(card, name).evaluate(res)


def assert_verdicts(card: str, res: Results, expected: Mapping[str, bool | None]) -> None:
    """Every claim in ``expected`` gets that verdict on ``res`` (the message lists all mismatches)."""
    got = {name: claim(card, name).evaluate(res) for name in expected}
    wrong = {n: (r.held, r.detail) for n, r in got.items() if r.held is not expected[n]}
    assert not wrong, f"card {card!r}: unexpected verdicts {wrong}"


def run_tiny(card: str, out: str | Path, **kwargs: Any) -> Any:
    """``reproduce(card, "tiny")`` into ``out`` without output; asserts the checks every card must pass."""
    from seqzoo.experiments.runner import reproduce

    report = reproduce(card, scale="tiny", out=out, progress=False, echo=None, **kwargs)
    assert not report.failures, f"card {card!r}: failed runs at tiny scale: {report.failures}"
    assert report.runs_total == sum(len(e.run_ids) for e in report.results.entries)
    c = get_experiment(card)  # every claim and observation judged without raising
    assert len(report.claims) == len(c.claims) and len(report.observations) == len(c.observations)
    assert report.files["summary.md"].exists() and report.files["summary.json"].exists()
    assert all(Path(p).exists() for k, p in report.files.items() if k.startswith("plot:"))
    return report
