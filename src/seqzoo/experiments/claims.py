"""Claim helpers: the common shapes of a card's claims, with the verdict and the detail text generated.

Every helper reads ``Results`` and returns a ``ClaimResult``; a missing cell raises ``MissingResult`` (the
claim becomes undecided). The shapes:

* ``compare``: "A op B" per value of a label (``over="task"``: on every task), against one model or the best
  of several (``b=("lstm", "gru")``), with an optional factor and slack (``A <= 1.01 x best(B)``).
* ``threshold``: "the mean of these cells op a fixed value" (``<= 2.1``, ``>= 0.96``).
* ``within``: "within a tolerance of a reference value" per cell (a paper's number, an ARIMA fit).
* ``beats_baseline``: "op fraction x the task's baseline" per cell (``<= 0.9 x memoryless``).

Each takes ``numbers``: the dict the claim reports (a dict or a function of the results); the default
reports the compared means. ``all_held`` joins per-part verdicts for claims that need their own logic.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from seqzoo.experiments.card import ClaimResult, Results, Stat

OPS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                                  ">=": operator.ge}
# a label value (``"gru"``, looked up under ``label``) or a full label set (``{"arch": "gru", "B": 1}``)
Cell = str | int | float | Mapping[str, Any]
Numbers = Mapping[str, Any] | Callable[[Results], Mapping[str, Any]] | None
PerValue = Any  # a value, or a function of the ``over`` value that returns it


def _op(op: str) -> Callable[[float, float], bool]:
    if op not in OPS:
        raise ValueError(f"op must be one of {sorted(OPS)}, got {op!r}")
    return OPS[op]


def _labels(cell: Cell, label: str) -> dict[str, Any]:
    return dict(cell) if isinstance(cell, Mapping) else {label: cell}


def _name(cell: Cell) -> str:
    return ",".join(f"{k}={v}" for k, v in cell.items()) if isinstance(cell, Mapping) else str(cell)


def _at(value: PerValue, key: Any) -> Any:
    return value(key) if callable(value) else value


def combine(verdicts: Iterable[bool | None]) -> bool | None:
    """False if any verdict is False, else None if any is None (or there are none), else True."""
    verdicts = list(verdicts)
    return False if False in verdicts else (None if None in verdicts or not verdicts else True)


def all_held(parts: Iterable[tuple[bool | None, str]], numbers: Mapping[str, Any], rule: str) -> ClaimResult:
    """One verdict from per-part verdicts: NOT HELD if any part failed, UNDECIDED if any is undecided.

    The detail is the parts' texts joined by ``;`` followed by ``(held if <rule>)``.
    """
    parts = list(parts)
    detail = "; ".join(t for _, t in parts) + f" (held if {rule})"
    return ClaimResult(combine(h for h, _ in parts), dict(numbers), detail)


def _numbers(numbers: Numbers, results: Results, default: dict[str, Any]) -> Mapping[str, Any]:
    if numbers is None:
        return default
    return numbers(results) if callable(numbers) else numbers


def _where(over: str | None, values: Sequence[Any] | None, results: Results, where: Mapping[str, Any],
           key: str) -> list[tuple[Any, dict[str, Any]]]:
    """``(value, labels)`` per compared slice: one slice without ``over``, else one per value of ``over``."""
    if over is None:
        return [(None, dict(where))]
    vals = list(values) if values is not None else results.label_values(over, **where)
    if not vals:
        from seqzoo.experiments.card import MissingResult

        raise MissingResult(f"no values of label {over!r} for {key}")
    return [(v, {**where, over: v}) for v in vals]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def compare(results: Results, a: Cell, b: Cell | Sequence[Cell], op: str = "<=", *, over: str | None = None,
            values: Sequence[Any] | None = None, where: Mapping[str, Any] | None = None, label: str = "arch",
            metric: PerValue = None, split: str | None = None, factor: float = 1.0, slack: float = 0.0,
            numbers: Numbers = None) -> ClaimResult:
    """Held if ``mean(a) op factor x mean(b) + slack`` in every slice (every value of ``over``).

    ``b`` may be several cells: then A is compared with the best of them (the lowest for ``<``/``<=``, the
    highest for ``>``/``>=``). ``metric`` may be a function of the ``over`` value (one metric per task).
    """
    fn = _op(op)
    bs = [b] if isinstance(b, (str, int, float, Mapping)) else list(b)
    where = dict(where or {})
    parts, default = [], {}
    for value, lab in _where(over, values, results, where, _name(a)):
        m = _at(metric, value)
        sa = results.stat(m, split, **lab, **_labels(a, label))
        sbs = {_name(c): results.stat(m, split, **lab, **_labels(c, label)) for c in bs}
        pick = min if op.startswith("<") else max
        best = pick(sbs, key=lambda k: sbs[k].mean)
        ok = fn(sa.mean, factor * sbs[best].mean + slack)
        prefix = f"{over}={value}: " if over is not None else ""
        others = ", ".join(f"{k} {s}" for k, s in sbs.items())
        parts.append((ok, f"{prefix}{_name(a)} {sa} vs {others}"))
        key = f"{value}/" if over is not None else ""
        default[f"{key}{_name(a)}"] = round(sa.mean, 4)
        default.update({f"{key}{k}": round(s.mean, 4) for k, s in sbs.items()})
    target = ("the best of " if len(bs) > 1 else "") + "/".join(_name(c) for c in bs)
    rule = f"{_name(a)} {op} " + (f"{factor:g} x " if factor != 1 else "") + target \
        + (f" {'+' if slack >= 0 else '-'} {abs(slack):g}" if slack else "") \
        + (f" on every {over}" if over is not None else "")
    return all_held(parts, _numbers(numbers, results, default), rule)


def threshold(results: Results, cells: Cell | Sequence[Cell], op: str, value: float, *,
              where: Mapping[str, Any] | None = None, label: str = "arch", metric: str | None = None,
              split: str | None = None, numbers: Numbers = None) -> ClaimResult:
    """Held if the mean of every cell ``op value`` (a NaN mean fails every op)."""
    fn = _op(op)
    cells = [cells] if isinstance(cells, (str, int, float, Mapping)) else list(cells)
    parts, default = [], {}
    for c in cells:
        st = results.stat(metric, split, **dict(where or {}), **_labels(c, label))
        parts.append((fn(st.mean, value), f"{_name(c)} {st}"))
        default[_name(c)] = round(st.mean, 4)
    return all_held(parts, _numbers(numbers, results, default), f"each mean {op} {value:g}")


def within(results: Results, reference: Mapping[str, float] | Mapping[Any, float], tolerance: float, *,
           where: Mapping[str, Any] | None = None, label: str = "arch", metric: str | None = None,
           split: str | None = None, every_seed: bool = False, numbers: Numbers = None,
           what: str = "reference") -> ClaimResult:
    """Held if every cell's mean (every seed with ``every_seed``) is within ``tolerance`` of its reference.

    ``reference`` maps a cell (a value of ``label``) to the reference number (a paper's table, a fit).
    """
    parts, default = [], {}
    for c, ref in reference.items():
        st = results.stat(metric, split, **dict(where or {}), **_labels(c, label))
        gap = max(abs(v - ref) for v in st.values) if every_seed else abs(st.mean - ref)
        parts.append((gap <= tolerance, f"{_name(c)} {st} vs {what} {_fmt(ref)} ({st.mean - ref:+.3f})"))
        default[f"{_name(c)}_minus_{what}"] = round(st.mean - ref, 4)
    return all_held(parts, _numbers(numbers, results, default),
                    f"{'every seed' if every_seed else 'every mean'} is within {tolerance:g} of the {what}")


def beats_baseline(results: Results, cells: Cell | Sequence[Cell], baseline: PerValue, *, fraction: float = 1.0,
                   op: str = "<=", over: str | None = None, values: Sequence[Any] | None = None,
                   where: Mapping[str, Any] | None = None, label: str = "arch", metric: PerValue = None,
                   split: str | None = None, numbers: Numbers = None, what: str = "baseline") -> ClaimResult:
    """Held if every cell's mean ``op fraction x baseline`` in every slice.

    ``baseline`` is a number or a function of the ``over`` value (``task_baseline`` of that task); use
    ``op="<="`` for losses and ``op=">="`` for accuracies.
    """
    fn = _op(op)
    cells = [cells] if isinstance(cells, (str, int, float, Mapping)) else list(cells)
    parts, default = [], {}
    for value, lab in _where(over, values, results, dict(where or {}), "baseline"):
        base = float(_at(baseline, value))
        m = _at(metric, value)
        stats = {_name(c): results.stat(m, split, **lab, **_labels(c, label)) for c in cells}
        ok = all(fn(s.mean, fraction * base) for s in stats.values())
        prefix = f"{over}={value}: " if over is not None else ""
        parts.append((ok, prefix + ", ".join(f"{k} {s}" for k, s in stats.items()) + f" vs {what} {_fmt(base)}"))
        key = f"{value}/" if over is not None else ""
        default.update({f"{key}{k}": round(s.mean, 4) for k, s in stats.items()})
        default[f"{key}{what}"] = round(base, 4)
    scale = f"{fraction:g} x " if fraction != 1 else ""
    return all_held(parts, _numbers(numbers, results, default),
                    f"each mean {op} {scale}the {what}" + (f" on every {over}" if over is not None else ""))


def means(results: Results, cells: Iterable[Cell], *, where: Mapping[str, Any] | None = None, label: str = "arch",
          metric: str | None = None, split: str | None = None, digits: int = 4,
          spread: str | None = None) -> dict[str, Any]:
    """``{cell: rounded mean}`` of the cells that have a result (a claim's reported numbers).

    ``spread="std"`` adds ``<cell>_std`` and ``spread="seeds"`` adds ``<cell>_seeds`` (the per-seed values)
    for cells with more than one seed.
    """
    if spread not in (None, "std", "seeds"):
        raise ValueError(f"spread must be None, 'std' or 'seeds', got {spread!r}")
    out: dict[str, Any] = {}
    for c in cells:
        st: Stat | None = results.get(metric, split, **dict(where or {}), **_labels(c, label))
        if st is None:
            continue
        out[_name(c)] = round(st.mean, digits)
        if spread == "std" and st.n > 1:
            out[f"{_name(c)}_std"] = round(st.std, digits)
        elif spread == "seeds" and st.n > 1:
            out[f"{_name(c)}_seeds"] = [round(v, digits) for v in st.values]
    return out
