"""Deterministic finite automata over named symbols (pure Python: no torch, no layers).

``DFA`` is an immutable automaton: run it on words, complete it with a dead state, keep the reachable
part, minimize it (Hopcroft), compare two automata (shortest distinguishing word), count, enumerate and
uniformly sample the words of a given length and class, and draw it to a PNG (matplotlib is imported
only when drawing).

It is a leaf module, like ``seqzoo.errors``: the formal-language tasks build their labels with it and
``seqzoo.layers.automaton`` extracts one from a state-regularized network, so it sits below both tiers
rather than inside ``layers`` (it is not a layer) or ``ops`` (it is not a tensor function).

A word is a ``str`` when every symbol is one character, else a tuple of symbols.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Word = str | Sequence[str]
MISSING = -1


@dataclass(frozen=True, eq=False)
class DFA:
    """A (possibly partial) DFA: ``delta[state][symbol index]`` is the next state or ``MISSING`` (-1).

    A missing transition rejects (as if it led to a dead state). ``labels`` are display names.
    """

    alphabet: tuple[str, ...]
    delta: tuple[tuple[int, ...], ...]
    start: int
    accepting: frozenset[int]
    labels: tuple[str, ...] | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _cache: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alphabet = tuple(str(a) for a in self.alphabet)
        object.__setattr__(self, "alphabet", alphabet)
        object.__setattr__(self, "delta", tuple(tuple(int(s) for s in row) for row in self.delta))
        object.__setattr__(self, "accepting", frozenset(int(s) for s in self.accepting))
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise ValueError(f"DFA: the alphabet must be non-empty without repeats, got {alphabet}")
        n = len(self.delta)
        if n == 0:
            raise ValueError("DFA: needs at least one state")
        for q, row in enumerate(self.delta):
            if len(row) != len(alphabet):
                raise ValueError(f"DFA: state {q} has {len(row)} transitions, expected one per symbol "
                                 f"({len(alphabet)}) or {MISSING} for none")
            bad = [s for s in row if not (s == MISSING or 0 <= s < n)]
            if bad:
                raise ValueError(f"DFA: state {q} has transitions to {bad}, expected states 0..{n - 1} or {MISSING}")
        if not 0 <= self.start < n:
            raise ValueError(f"DFA: start state {self.start} is not among states 0..{n - 1}")
        bad = sorted(s for s in self.accepting if not 0 <= s < n)
        if bad:
            raise ValueError(f"DFA: accepting states {bad} are not among states 0..{n - 1}")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(s) for s in self.labels))
            if len(self.labels) != n:
                raise ValueError(f"DFA: got {len(self.labels)} labels for {n} states")
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(alphabet)})
        object.__setattr__(self, "_cache", {})

    # ----- construction -----------------------------------------------------------------------
    @classmethod
    def from_transitions(cls, alphabet: Sequence[str], transitions: dict[tuple[Any, str], Any], start: Any,
                         accepting: Sequence[Any], states: Sequence[Any] | None = None) -> DFA:
        """Build from named states: ``transitions[(state, symbol)] = next_state`` (absent = missing)."""
        names: list[Any] = list(states) if states is not None else []
        for name in [start, *[s for s, _ in transitions], *transitions.values(), *accepting]:
            if name not in names:
                names.append(name)
        pos = {name: i for i, name in enumerate(names)}
        alphabet = tuple(alphabet)
        delta = [[MISSING] * len(alphabet) for _ in names]
        for (src, sym), dst in transitions.items():
            if sym not in alphabet:
                raise ValueError(f"DFA: transition ({src!r}, {sym!r}) uses a symbol outside the alphabet {alphabet}")
            delta[pos[src]][alphabet.index(sym)] = pos[dst]
        return cls(alphabet, tuple(tuple(r) for r in delta), pos[start], frozenset(pos[a] for a in accepting),
                   tuple(str(n) for n in names))

    # ----- basic queries ----------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.delta)

    @property
    def is_complete(self) -> bool:
        return all(s != MISSING for row in self.delta for s in row)

    def symbol_index(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(f"DFA: symbol {symbol!r} is not in the alphabet {self.alphabet}") from None

    def step(self, state: int, symbol: str) -> int:
        """Next state, or ``MISSING``."""
        return self.delta[state][self.symbol_index(symbol)] if state != MISSING else MISSING

    def trace(self, word: Word) -> list[int]:
        """States visited: ``[start, after symbol 1, ...]`` (stops at the first missing transition)."""
        q, path = self.start, [self.start]
        for symbol in word:
            q = self.step(q, symbol)
            if q == MISSING:
                break
            path.append(q)
        return path

    def run(self, word: Word) -> int | None:
        """The state after reading ``word``, or None if a transition is missing."""
        q = self.start
        for symbol in word:
            q = self.step(q, symbol)
            if q == MISSING:
                return None
        return q

    def accepts(self, word: Word) -> bool:
        q = self.run(word)
        return q is not None and q in self.accepting

    def _word(self, symbols: Sequence[str]) -> Word:
        return "".join(symbols) if all(len(a) == 1 for a in self.alphabet) else tuple(symbols)

    # ----- transformations --------------------------------------------------------------------
    def complete(self) -> DFA:
        """The same language with every missing transition sent to a (new) rejecting dead state."""
        if self.is_complete:
            return self
        if "complete" in self._cache:
            return self._cache["complete"]
        dead = self.n_states
        delta = [tuple(dead if s == MISSING else s for s in row) for row in self.delta]
        delta.append(tuple([dead] * len(self.alphabet)))
        labels = (*self.labels, "dead") if self.labels is not None else None
        self._cache["complete"] = DFA(self.alphabet, tuple(delta), self.start, self.accepting, labels)
        return self._cache["complete"]

    def complement(self) -> DFA:
        full = self.complete()
        return DFA(full.alphabet, full.delta, full.start, frozenset(range(full.n_states)) - full.accepting,
                   full.labels)

    def reachable_states(self) -> list[int]:
        """States reachable from the start, in breadth-first order (symbols in alphabet order)."""
        seen, order, queue = {self.start}, [self.start], deque([self.start])
        while queue:
            q = queue.popleft()
            for s in self.delta[q]:
                if s != MISSING and s not in seen:
                    seen.add(s)
                    order.append(s)
                    queue.append(s)
        return order

    def _renumbered(self, order: Sequence[int], block_of: dict[int, int] | None = None) -> DFA:
        """Keep the states (or blocks) in ``order``, numbered 0.. in that order."""
        block_of = block_of or {q: q for q in order}
        new = {b: i for i, b in enumerate(order)}
        members: dict[int, int] = {}
        for q, b in block_of.items():
            members.setdefault(b, q)
        delta = []
        for b in order:
            q = members[b]
            delta.append(tuple(new[block_of[s]] if s != MISSING else MISSING for s in self.delta[q]))
        accepting = frozenset(new[b] for q, b in block_of.items() if q in self.accepting and b in new)
        labels = None
        if self.labels is not None:
            labels = tuple("+".join(self.labels[q] for q in sorted(block_of) if block_of[q] == b) for b in order)
        return DFA(self.alphabet, tuple(delta), new[block_of[self.start]], accepting, labels)

    def reachable(self) -> DFA:
        """The part reachable from the start state, renumbered breadth-first."""
        return self._renumbered(self.reachable_states())

    def minimize(self) -> DFA:
        """The minimal complete DFA of the same language (Hopcroft), states numbered breadth-first.

        The dead state, if the language needs one, is kept: the state count is that of the minimal
        complete automaton.
        """
        full = self.complete().reachable()
        n, m = full.n_states, len(full.alphabet)
        inverse: list[list[list[int]]] = [[[] for _ in range(n)] for _ in range(m)]
        for q, row in enumerate(full.delta):
            for a, s in enumerate(row):
                inverse[a][s].append(q)
        acc = frozenset(full.accepting)
        rej = frozenset(range(n)) - acc
        partition = {b for b in (acc, rej) if b}
        work = {min(partition, key=len)} if len(partition) == 2 else set(partition)
        while work:
            splitter = work.pop()
            for a in range(m):
                pre = {p for s in splitter for p in inverse[a][s]}
                if not pre:
                    continue
                for block in list(partition):
                    inside = block & pre
                    if not inside or len(inside) == len(block):
                        continue
                    outside = block - inside
                    partition.remove(block)
                    partition.update((inside, outside))
                    if block in work:
                        work.remove(block)
                        work.update((inside, outside))
                    else:
                        work.add(min(inside, outside, key=len))
        block_of = {q: min(b) for b in partition for q in b}
        # breadth-first order of the blocks from the start block
        order, seen, queue = [block_of[full.start]], {block_of[full.start]}, deque([block_of[full.start]])
        while queue:
            b = queue.popleft()
            for s in full.delta[b]:  # b is the smallest state of its block
                nb = block_of[s]
                if nb not in seen:
                    seen.add(nb)
                    order.append(nb)
                    queue.append(nb)
        return full._renumbered(order, block_of)

    # ----- comparison -------------------------------------------------------------------------
    def difference(self, other: DFA) -> Word | None:
        """A shortest word on which the two automata disagree, or None if they accept the same language."""
        if set(self.alphabet) != set(other.alphabet):
            raise ValueError(f"DFA: cannot compare automata over different alphabets {self.alphabet} and "
                             f"{other.alphabet}")
        a, b = self.complete(), other.complete()
        start = (a.start, b.start)
        parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
        queue = deque([start])
        while queue:
            pair = queue.popleft()
            if (pair[0] in a.accepting) != (pair[1] in b.accepting):
                symbols: list[str] = []
                while parent[pair] is not None:
                    pair, sym = parent[pair]  # type: ignore[misc]
                    symbols.append(sym)
                return self._word(symbols[::-1])
            for sym in self.alphabet:
                nxt = (a.step(pair[0], sym), b.step(pair[1], sym))
                if nxt not in parent:
                    parent[nxt] = (pair, sym)
                    queue.append(nxt)
        return None

    def equivalent(self, other: DFA) -> bool:
        return self.difference(other) is None

    # ----- counting, enumeration, sampling ----------------------------------------------------
    def _counts(self, length: int, accepted: bool) -> list[list[int]]:
        """``table[r][q]`` = number of words of length r leading from q into the wanted class (cached)."""
        key = ("counts", accepted)
        table = self._cache.get(key)
        if table is not None and len(table) > length:
            return table
        full = self.complete()
        goal = full.accepting if accepted else frozenset(range(full.n_states)) - full.accepting
        table = [[1 if q in goal else 0 for q in range(full.n_states)]]
        for _ in range(length):
            prev = table[-1]
            table.append([sum(prev[s] for s in row) for row in full.delta])
        self._cache[key] = table
        return table

    def count(self, length: int, accepted: bool = True) -> int:
        """Number of words of exactly ``length`` symbols that are accepted (or rejected)."""
        if length < 0:
            raise ValueError(f"DFA.count: length must be >= 0, got {length}")
        return self._counts(length, accepted)[length][self.complete().start]

    def words(self, length: int, accepted: bool = True) -> Iterator[Word]:
        """All words of ``length`` in the wanted class, in alphabet order (branches without one are pruned)."""
        full, table = self.complete(), self._counts(length, accepted)

        def walk(q: int, left: int, prefix: list[str]) -> Iterator[Word]:
            if left == 0:
                yield self._word(prefix)
                return
            for sym, s in zip(full.alphabet, full.delta[q]):
                if table[left - 1][s]:
                    yield from walk(s, left - 1, [*prefix, sym])

        if table[length][full.start]:
            yield from walk(full.start, length, [])

    def sample(self, length: int, rng: random.Random, accepted: bool = True) -> Word | None:
        """A word drawn uniformly among those of ``length`` in the wanted class (None if there is none)."""
        full, table = self.complete(), self._counts(length, accepted)
        q = full.start
        if not table[length][q]:
            return None
        symbols: list[str] = []
        for left in range(length, 0, -1):
            r = rng.randrange(table[left][q])
            for sym, s in zip(full.alphabet, full.delta[q]):
                r -= table[left - 1][s]
                if r < 0:
                    symbols.append(sym)
                    q = s
                    break
        return self._word(symbols)

    # ----- serialization and display ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"alphabet": list(self.alphabet), "delta": [list(r) for r in self.delta], "start": self.start,
                "accepting": sorted(self.accepting), "labels": list(self.labels) if self.labels else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DFA:
        missing = {"alphabet", "delta", "start", "accepting"} - set(d)
        if missing:
            raise ValueError(f"DFA.from_dict: missing keys {sorted(missing)}")
        return cls(tuple(d["alphabet"]), tuple(tuple(r) for r in d["delta"]), d["start"], frozenset(d["accepting"]),
                   tuple(d["labels"]) if d.get("labels") else None)

    def state_name(self, q: int) -> str:
        return self.labels[q] if self.labels is not None else str(q)

    def edges(self) -> dict[tuple[int, int], list[str]]:
        """``(src, dst) -> symbols`` of every present transition."""
        out: dict[tuple[int, int], list[str]] = {}
        for q, row in enumerate(self.delta):
            for sym, s in zip(self.alphabet, row):
                if s != MISSING:
                    out.setdefault((q, s), []).append(sym)
        return out

    def to_dot(self) -> str:
        """Graphviz source (for tools that render it; ``draw`` needs only matplotlib)."""
        lines = ["digraph DFA {", "  rankdir=LR;", '  __start [shape=point, label=""];']
        for q in range(self.n_states):
            shape = "doublecircle" if q in self.accepting else "circle"
            lines.append(f'  q{q} [shape={shape}, label="{self.state_name(q)}"];')
        lines.append(f"  __start -> q{self.start};")
        for (q, s), syms in self.edges().items():
            lines.append(f'  q{q} -> q{s} [label="{",".join(syms)}"];')
        lines.append("}")
        return "\n".join(lines)

    def draw(self, path: str | os.PathLike, *, title: str | None = None, dpi: int = 120) -> Path:
        """Render to a PNG: states on a circle, accepting states double-ringed, an arrow into the start."""
        try:
            from matplotlib.figure import Figure
            from matplotlib.patches import Circle, FancyArrowPatch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("DFA.draw needs matplotlib: pip install 'seqzoo[train]' (or pip install matplotlib)"
                              ) from e
        import math

        n = self.n_states
        radius = 0.0 if n == 1 else max(1.2, 0.45 * n)
        pos = {q: (radius * math.cos(math.pi - 2 * math.pi * q / n), radius * math.sin(math.pi - 2 * math.pi * q / n))
               for q in range(n)}
        node = 0.32
        size = 2.0 + 1.1 * radius
        fig = Figure(figsize=(size + 1.5, size + 1.0))
        ax = fig.add_subplot(1, 1, 1)
        ax.set_aspect("equal")
        ax.axis("off")
        for q, (x, y) in pos.items():
            ax.add_patch(Circle((x, y), node, fill=False, lw=1.5))
            if q in self.accepting:
                ax.add_patch(Circle((x, y), node * 0.8, fill=False, lw=1.2))
            ax.text(x, y, self.state_name(q), ha="center", va="center", fontsize=9)
        sx, sy = pos[self.start]
        # the start arrow comes in 70 degrees off the outward direction, where the self-loop sits
        a0 = (math.atan2(sy, sx) if (sx or sy) else math.pi) + math.radians(70)
        ax.add_patch(FancyArrowPatch((sx + (node + 0.6) * math.cos(a0), sy + (node + 0.6) * math.sin(a0)),
                                     (sx + node * math.cos(a0), sy + node * math.sin(a0)), arrowstyle="-|>",
                                     mutation_scale=14, lw=1.3, shrinkA=0, shrinkB=0))
        for (q, s), syms in self.edges().items():
            label = ",".join(syms)
            x, y = pos[q]
            if q == s:
                # a loop pointing away from the centre
                ang = math.atan2(y, x) if (x or y) else math.pi / 2
                cx, cy = x + 1.45 * node * math.cos(ang), y + 1.45 * node * math.sin(ang)
                ax.add_patch(Circle((cx, cy), node * 0.55, fill=False, lw=1.1))
                ax.text(x + 2.35 * node * math.cos(ang), y + 2.35 * node * math.sin(ang), label, ha="center",
                        va="center", fontsize=8)
                continue
            x2, y2 = pos[s]
            dx, dy = x2 - x, y2 - y
            dist = math.hypot(dx, dy)
            ux, uy = dx / dist, dy / dist
            ax.add_patch(FancyArrowPatch((x + node * ux, y + node * uy), (x2 - node * ux, y2 - node * uy),
                                         connectionstyle="arc3,rad=0.18", arrowstyle="-|>", mutation_scale=13,
                                         lw=1.1, shrinkA=0, shrinkB=0))
            mx, my = (x + x2) / 2, (y + y2) / 2
            ax.text(mx - 0.12 * dy, my + 0.12 * dx, label, ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
        lim = radius + 1.2
        ax.set_xlim(-lim - 0.5, lim)
        ax.set_ylim(-lim, lim)
        if title:
            ax.set_title(title)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
        return out

    def __repr__(self) -> str:
        return (f"DFA(states={self.n_states}, alphabet={self.alphabet}, start={self.start}, "
                f"accepting={sorted(self.accepting)}, complete={self.is_complete})")
