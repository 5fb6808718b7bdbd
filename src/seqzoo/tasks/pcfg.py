"""A general probabilistic context-free grammar engine: inside probabilities by length, length-conditioned
sampling, and parsing (the probability of a string summed over all its parses).

Rules are compiled to binary nodes (the suffixes of each right-hand side), so sampling and parsing only ever split
a length in two; epsilon and unary rules are allowed as long as no cycle of them exists. The context-free language
tasks (``seqzoo.tasks.cfl``) define their grammars with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_TERM, _EMPTY, _NT, _CAT = 0, 1, 2, 3


def cont(mean: float) -> float:
    """Continue-probability giving a geometric count with the given mean: ``1 - 1 / (mean + 1)``."""
    return 1.0 - 1.0 / (mean + 1.0)


@dataclass(frozen=True)
class Rule:
    """``lhs -> rhs`` with probability ``prob`` (an empty ``rhs`` is an epsilon rule)."""

    lhs: str
    rhs: tuple[str, ...]
    prob: float


class PCFG:
    """A probabilistic context-free grammar compiled to binary nodes.

    Node kinds: a terminal, the empty string, a nonterminal (a mixture over its rules' right-hand sides) and a
    concatenation of two nodes (a right-hand side suffix). ``inside(n)`` gives ``I[node, l]`` for ``l <= n``;
    ``sample(length, rng)`` draws a string of that exact length; ``log_prob(strings)`` parses (sums all parses).
    """

    def __init__(self, start: str, rules: Sequence[Rule], terminals: Sequence[str], *, unambiguous: bool = False
                 ) -> None:
        self.terminals = tuple(terminals)
        if len(set(self.terminals)) != len(self.terminals):
            raise ValueError(f"terminals must be distinct, got {self.terminals}")
        self.unambiguous = unambiguous
        nts = sorted({r.lhs for r in rules})
        if start not in nts:
            raise ValueError(f"start symbol {start!r} has no rule; nonterminals are {nts}")
        clash = set(nts) & set(self.terminals)
        if clash:
            raise ValueError(f"symbols {sorted(clash)} are both terminals and nonterminals")
        totals: dict[str, float] = {}
        for r in rules:
            if not r.prob > 0:
                raise ValueError(f"rule {r.lhs} -> {' '.join(r.rhs) or 'eps'} has probability {r.prob}; must be > 0")
            for s in r.rhs:
                if s not in nts and s not in self.terminals:
                    raise ValueError(f"rule {r.lhs} -> {' '.join(r.rhs)} uses unknown symbol {s!r}")
            totals[r.lhs] = totals.get(r.lhs, 0.0) + r.prob
        for lhs, total in totals.items():
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"rule probabilities of {lhs!r} sum to {total}, expected 1")
        # --- nodes: terminals, EMPTY, nonterminals, then concatenations (deduplicated) ---
        self.kind: list[int] = []
        self.args: list[Any] = []
        for i in range(len(self.terminals)):
            self._add(_TERM, i)
        self.empty = self._add(_EMPTY, None)
        nt_id = {name: self._add(_NT, []) for name in nts}
        cat_id: dict[tuple[int, int], int] = {}

        def node_of(sym: str) -> int:
            return nt_id[sym] if sym in nt_id else self.terminals.index(sym)

        for r in rules:
            child = self.empty
            for k, sym in enumerate(reversed(r.rhs)):
                s = node_of(sym)
                if k == 0:
                    child = s
                else:
                    key = (s, child)
                    if key not in cat_id:
                        cat_id[key] = self._add(_CAT, key)
                    child = cat_id[key]
            self.args[nt_id[r.lhs]].append((r.prob, child))
        self.start = nt_id[start]
        self.nt_names = nts
        self._order = self._topological_order()
        self._table = np.zeros((len(self.kind), 0))
        self._cdf_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _add(self, kind: int, arg: Any) -> int:
        self.kind.append(kind)
        self.args.append(arg)
        return len(self.kind) - 1

    # ----- structure ----------------------------------------------------------------------------
    def _nullable(self) -> list[bool]:
        null = [k == _EMPTY for k in self.kind]
        changed = True
        while changed:
            changed = False
            for v, k in enumerate(self.kind):
                if null[v]:
                    continue
                if (k == _NT and any(null[c] for _, c in self.args[v])) or (
                        k == _CAT and null[self.args[v][0]] and null[self.args[v][1]]):
                    null[v] = changed = True
        return null

    def _topological_order(self) -> list[int]:
        """Nodes ordered so that every same-length dependency comes first (unary / nullable edges)."""
        null = self._nullable()
        deps: list[list[int]] = []
        for v, k in enumerate(self.kind):
            if k == _NT:
                deps.append([c for _, c in self.args[v]])
            elif k == _CAT:
                left, right = self.args[v]
                deps.append(([left] if null[right] else []) + ([right] if null[left] else []))
            else:
                deps.append([])
        order: list[int] = []
        state = [0] * len(self.kind)  # 0 new, 1 on the path, 2 done
        for root in range(len(self.kind)):
            stack = [(root, iter(deps[root]))]
            if state[root]:
                continue
            state[root] = 1
            while stack:
                v, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[v] = 2
                    order.append(v)
                    stack.pop()
                elif state[nxt] == 1:
                    raise ValueError("the grammar has a cycle of unary/epsilon rules; length-conditioned sampling "
                                     "needs it removed")
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(deps[nxt])))
        return order

    # ----- inside probabilities by length ------------------------------------------------------
    def inside(self, max_len: int) -> np.ndarray:
        """``I[node, l]`` for ``l = 0..max_len`` (float64): probability that the node yields exactly l symbols."""
        n_have = self._table.shape[1]
        if n_have > max_len:
            return self._table[:, :max_len + 1]
        table = np.zeros((len(self.kind), max_len + 1))
        table[:, :n_have] = self._table
        for length in range(n_have, max_len + 1):
            for v in self._order:
                k = self.kind[v]
                if k == _TERM:
                    table[v, length] = float(length == 1)
                elif k == _EMPTY:
                    table[v, length] = float(length == 0)
                elif k == _NT:
                    table[v, length] = sum(p * table[c, length] for p, c in self.args[v])
                else:
                    left, right = self.args[v]
                    table[v, length] = float(np.dot(table[left, :length + 1], table[right, length::-1]))
        self._table = table
        return table

    def valid_lengths(self, lo: int, hi: int) -> list[int]:
        """Lengths in ``[lo, hi]`` the grammar can produce."""
        table = self.inside(hi)
        return [n for n in range(lo, hi + 1) if table[self.start, n] > 0]

    def derivation_entropy(self, max_len: int) -> np.ndarray:
        """``H[node, l] = sum over derivations of P * (-log P)``; for an unambiguous grammar the string entropy."""
        table = self.inside(max_len)
        ent = np.zeros_like(table)
        for length in range(max_len + 1):
            for v in self._order:
                k = self.kind[v]
                if k == _NT:
                    ent[v, length] = sum(p * (ent[c, length] - math.log(p) * table[c, length]) for p, c in self.args[v])
                elif k == _CAT:
                    left, right = self.args[v]
                    ent[v, length] = float(np.dot(ent[left, :length + 1], table[right, length::-1])
                                           + np.dot(table[left, :length + 1], ent[right, length::-1]))
        return ent

    def expected_neg_log_prob(self, length: int) -> float:
        """``E[-log p_G(w | L)]`` over strings of one length (exact only for unambiguous grammars)."""
        table = self.inside(length)
        total = table[self.start, length]
        if total <= 0:
            raise ValueError(f"the grammar produces no string of length {length}")
        return float(self.derivation_entropy(length)[self.start, length] / total + math.log(total))

    # ----- sampling ------------------------------------------------------------------------------
    def _choices(self, v: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        key = (v, length)
        hit = self._cdf_cache.get(key)
        if hit is not None:
            return hit
        table = self._table
        if self.kind[v] == _NT:
            options = np.arange(len(self.args[v]))
            w = np.array([p * table[c, length] for p, c in self.args[v]])
        else:
            left, right = self.args[v]
            options = np.arange(length + 1)
            w = table[left, :length + 1] * table[right, length::-1]
        keep = w > 0
        options, w = options[keep], np.cumsum(w[keep])
        hit = (options, w / w[-1])
        self._cdf_cache[key] = hit
        return hit

    def sample(self, length: int, rng: np.random.Generator) -> list[int]:
        """One string (terminal ids) of exactly ``length`` symbols, drawn from ``p_G(w | |w| = length)``."""
        if self.inside(length)[self.start, length] <= 0:
            raise ValueError(f"the grammar produces no string of length {length}")
        out: list[int] = []
        stack = [(self.start, length)]
        while stack:
            v, n = stack.pop()
            k = self.kind[v]
            if k == _TERM:
                out.append(self.args[v])
            elif k == _EMPTY:
                continue
            else:
                options, cdf = self._choices(v, n)
                j = options[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(options) - 1)]
                if k == _NT:
                    stack.append((self.args[v][j][1], n))
                else:
                    left, right = self.args[v]
                    stack.append((right, n - int(j)))
                    stack.append((left, int(j)))
        return out

    # ----- parsing -------------------------------------------------------------------------------
    def log_prob(self, strings: np.ndarray, chunk: int = 16) -> np.ndarray:
        """``log p_G(w)`` (all parses) for equal-length strings ``(N, L)`` of terminal ids; -inf if not derivable."""
        strings = np.asarray(strings, dtype=np.int64)
        if strings.ndim != 2:
            raise ValueError(f"strings must be a (N, L) array of terminal ids, got shape {strings.shape}")
        if strings.size and (strings.min() < 0 or strings.max() >= len(self.terminals)):
            raise ValueError(f"terminal ids must lie in [0, {len(self.terminals)}), got [{strings.min()}, "
                             f"{strings.max()}]")
        out = np.empty(strings.shape[0])
        for s in range(0, strings.shape[0], chunk):
            out[s:s + chunk] = self._inside_strings(strings[s:s + chunk])
        return out

    def _inside_strings(self, w: np.ndarray) -> np.ndarray:
        """Inside pass over spans for a chunk of equal-length strings.

        ``by_start[node, width, start, string]`` and ``by_end[node, width, end, string]`` hold the same values, so
        that the split sum of a concatenation reads plain slices of both (no gathers).
        """
        n, length = w.shape
        table = self.inside(length)
        by_start = np.zeros((len(self.kind), length + 1, length + 1, n))
        by_end = np.zeros_like(by_start)
        for m in range(length + 1):
            count = length - m + 1  # spans of width m: starts 0..length-m, ends m..length
            for v in self._order:
                k = self.kind[v]
                if k == _TERM:
                    if m != 1:
                        continue
                    val = (w == self.args[v]).T.astype(np.float64)
                elif k == _EMPTY:
                    if m != 0:
                        continue
                    val = np.ones((count, n))
                elif k == _NT:
                    val = np.zeros((count, n))
                    for p, c in self.args[v]:
                        val += p * by_start[c, m, :count]
                else:
                    left, right = self.args[v]
                    split = np.nonzero((table[left, :m + 1] > 0) & (table[right, m::-1] > 0))[0]
                    if split.size == 0:
                        continue
                    lo, hi = int(split[0]), int(split[-1])
                    # left spans (start t, width j) and right spans (end t + m, width m - j) for j = lo..hi
                    lft = by_start[left, lo:hi + 1, :count]
                    rgt = by_end[right, m - lo:(m - hi - 1 if m - hi - 1 >= 0 else None):-1, m:m + count]
                    val = np.einsum("jtn,jtn->tn", lft, rgt)
                by_start[v, m, :count] = val
                by_end[v, m, m:m + count] = val
        with np.errstate(divide="ignore"):
            return np.log(by_start[self.start, length, 0])
