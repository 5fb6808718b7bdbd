"""Extraction of deterministic finite automata from state-regularized RNNs (spec §9.2).

``extract_dfa`` reads an automaton off a model with one state-regularized cell: every centroid is
labelled accepting or rejecting by the model's classifier, the model is run over a set of strings, each
step's transition ``(argmax α_{t-1}, symbol) -> argmax α_t`` is counted, and from the start state the
most frequent successor of every (state, symbol) is kept, breadth-first. ``agreement`` measures how
often the automaton and the network give the same label.

The automaton itself (``DFA``) lives in ``seqzoo.dfa`` (it is not a layer, and the tasks use it too); it is
re-exported here so ``from seqzoo.layers.automaton import DFA`` keeps working.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seqzoo.dfa import DFA, MISSING, Word
from seqzoo.layers.cells.state_regularized import StateRegularizer, regularizers

__all__ = ["DFA", "MISSING", "Extraction", "Word", "agreement", "centroid_sequences", "decode_words",
           "default_centroid_labeler", "extract_dfa", "network_accepts"]


# ----- extraction from a state-regularized network --------------------------------------------------

@dataclass
class Extraction:
    """An automaton read off a network, with the evidence it was read from.

    ``centroids[q]`` is the centroid of DFA state q (-1: the initial state, when strings carry no start
    symbol). ``counts[(centroid, symbol)]`` counts the successors seen; ``consistency`` is the share of
    all observed transitions that go to the kept (majority) successor: 1.0 means the network behaved as
    a DFA on these strings.
    """

    dfa: DFA
    centroids: tuple[int, ...]
    centroid_accepting: tuple[bool, ...]
    counts: dict[tuple[int, str], Counter]
    consistency: float
    n_strings: int

    def summary(self) -> dict[str, Any]:
        return {"states": self.dfa.n_states, "minimal_states": self.dfa.minimize().n_states,
                "complete": self.dfa.is_complete, "consistency": self.consistency, "n_strings": self.n_strings,
                "centroids_used": len(set(self.centroids) - {-1}),
                "accepting_centroids": sum(self.centroid_accepting)}


def _regularizer(model: nn.Module) -> StateRegularizer:
    found = regularizers(model)
    if len(found) != 1:
        raise ValueError(f"DFA extraction needs a model with exactly one state-regularized cell, found {len(found)}")
    return found[0]


def default_centroid_labeler(model: nn.Module, accept_class: int = 1) -> Callable[[Tensor], Tensor]:
    """Label states with the model's own classifier: ``head(final_norm(h))`` of a one-layer ``SequenceModel``."""
    head = getattr(model, "head", None)
    layers = getattr(model, "layers", None)
    if head is None or layers is None:
        raise ValueError("DFA extraction: pass label_fn for models that are not a SequenceModel (no .head/.layers)")
    if len(layers) != 1:
        raise ValueError(f"DFA extraction: the classifier reads the regularized state directly only with one layer, "
                         f"the model has {len(layers)}; pass label_fn")
    if getattr(model, "residual", False) and layers[0].d_model == layers[0].d_output:
        raise ValueError("DFA extraction: a residual connection mixes the input into the state; pass label_fn")
    final_norm = getattr(model, "final_norm", nn.Identity())

    def label(h: Tensor) -> Tensor:
        logits = head(final_norm(h))
        if logits.shape[-1] == 1:
            return logits[..., 0] > 0
        return logits.argmax(-1) == accept_class

    return label


def decode_words(tokens: Tensor, mask: Tensor | None, vocab: Sequence[str]) -> list[list[str]]:
    """Token ids ``(B, L)`` -> lists of symbol names (padding removed)."""
    if tokens.dim() != 2:
        raise ValueError(f"expected token ids of shape (batch, seq_len), got {tuple(tokens.shape)}")
    lengths = mask.long().sum(1).tolist() if mask is not None else [tokens.shape[1]] * tokens.shape[0]
    out = []
    for row, n in zip(tokens.tolist(), lengths):
        bad = [t for t in row[:n] if not 0 <= t < len(vocab)]
        if bad:
            raise ValueError(f"token ids {bad} are outside the vocabulary of {len(vocab)} symbols")
        out.append([vocab[t] for t in row[:n]])
    return out


def _last_outputs(outputs: Tensor, mask: Tensor | None) -> Tensor:
    if outputs.dim() == 2:
        return outputs
    if mask is None:
        return outputs[:, -1]
    last = mask.long().sum(1).clamp(min=1) - 1
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), last]


def network_accepts(outputs: Tensor, mask: Tensor | None = None, accept_class: int = 1) -> Tensor:
    """The network's accept decision per sequence from its outputs (per-sequence or per-step)."""
    logits = _last_outputs(outputs, mask)
    return logits[..., 0] > 0 if logits.shape[-1] == 1 else logits.argmax(-1) == accept_class


@torch.no_grad()
def centroid_sequences(model: nn.Module, inputs: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run the model once: ``(argmax α per step (B, L), model outputs)``."""
    reg = _regularizer(model)
    was_training = model.training
    model.eval()
    try:
        with reg.trace() as alphas:
            out = model(inputs, mask=mask) if mask is not None else model(inputs)
    finally:
        model.train(was_training)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if len(alphas) != inputs.shape[1]:
        raise ValueError(f"DFA extraction: traced {len(alphas)} steps for inputs of length {inputs.shape[1]}; "
                         "the regularized cell must run once per step")
    return torch.stack(alphas, 1).argmax(-1), out


def extract_dfa(
    model: nn.Module,
    inputs: Tensor,
    mask: Tensor | None = None,
    *,
    vocab: Sequence[str],
    alphabet: Sequence[str],
    start_symbol: str | None = None,
    label_fn: Callable[[Tensor], Tensor] | None = None,
    accept_class: int = 1,
) -> Extraction:
    """Read a DFA off ``model`` (one state-regularized cell) from its run over token strings ``inputs``.

    ``vocab[token]`` names each token; ``alphabet`` lists the DFA's symbols. With ``start_symbol`` every
    string must begin with it and the DFA starts in the centroid reached after it; without, the DFA gets
    an extra initial state (the layer's initial state, labelled by ``label_fn`` on a zero state).
    """
    reg = _regularizer(model)
    label = label_fn or default_centroid_labeler(model, accept_class)
    alphabet = tuple(alphabet)
    with torch.no_grad():
        centroid_accepting = tuple(bool(v) for v in label(reg.centroids).tolist())
    assignments, _ = centroid_sequences(model, inputs, mask)
    words = decode_words(inputs, mask, vocab)
    init = -1
    counts: dict[tuple[int, str], Counter] = {}
    starts: Counter = Counter()
    for b, word in enumerate(words):
        states = assignments[b, : len(word)].tolist()
        if start_symbol is not None:
            if not word or word[0] != start_symbol:
                raise ValueError(f"DFA extraction: string {b} does not begin with the start symbol {start_symbol!r}: "
                                 f"{word[:5]}")
            starts[states[0]] += 1
            prev, symbols, nexts = states[0], word[1:], states[1:]
        else:
            prev, symbols, nexts = init, word, states
        for sym, nxt in zip(symbols, nexts):
            if sym not in alphabet:
                raise ValueError(f"DFA extraction: string {b} holds symbol {sym!r} outside the alphabet {alphabet}")
            counts.setdefault((prev, sym), Counter())[nxt] += 1
            prev = nxt
    if start_symbol is not None:
        if not starts:
            raise ValueError("DFA extraction: no strings given")
        start = starts.most_common(1)[0][0]
        start_accepting = centroid_accepting[start]
    else:
        start = init
        with torch.no_grad():
            start_accepting = bool(label(reg.centroids.new_zeros(1, reg.centroids.shape[1]))[0])

    def majority(c: Counter) -> int:
        best = max(c.values())
        return min(s for s, v in c.items() if v == best)

    order, pos, queue = [start], {start: 0}, deque([start])
    rows: list[list[int]] = []
    while queue:
        q = queue.popleft()
        row = []
        for sym in alphabet:
            c = counts.get((q, sym))
            if not c:
                row.append(MISSING)
                continue
            nxt = majority(c)
            if nxt not in pos:
                pos[nxt] = len(order)
                order.append(nxt)
                queue.append(nxt)
            row.append(pos[nxt])
        rows.append(row)
    accepting = frozenset(i for i, c in enumerate(order)
                          if (start_accepting if c == init else centroid_accepting[c]))
    labels = tuple("init" if c == init else f"s{c}" for c in order)
    dfa = DFA(alphabet, tuple(tuple(r) for r in rows), 0, accepting, labels)
    total = sum(sum(c.values()) for c in counts.values())
    kept = sum(c[majority(c)] for c in counts.values())
    return Extraction(dfa, tuple(order), centroid_accepting, counts, kept / total if total else 1.0, len(words))


def agreement(
    dfa: DFA,
    model: nn.Module,
    inputs: Tensor,
    mask: Tensor | None = None,
    *,
    vocab: Sequence[str],
    start_symbol: str | None = None,
    accept_class: int = 1,
) -> float:
    """Share of strings on which ``dfa`` and the network give the same accept/reject label."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(inputs, mask=mask) if mask is not None else model(inputs)
    finally:
        model.train(was_training)
    out = out[0] if isinstance(out, (tuple, list)) else out
    net = network_accepts(out, mask, accept_class).tolist()
    words = decode_words(inputs, mask, vocab)
    if start_symbol is not None:
        words = [w[1:] if w and w[0] == start_symbol else w for w in words]
    same = [dfa.accepts(w) == bool(n) for w, n in zip(words, net)]
    return sum(same) / len(same) if same else float("nan")
