"""The shared decoding module: GNMT's lp and cp with the spec's unit values (§5.4), beam bookkeeping."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.errors import ConfigError
from seqzoo.models.seq2seq import base
from seqzoo.models.seq2seq.decoding import (
    DecodeConfig,
    beam_search,
    coverage_penalty,
    greedy,
    length_penalty,
    penalized_score,
)
from seqzoo.tasks import translation

LP = {0.2: (1.0000, 1.1076, 1.2011, 1.3303, 1.5576), 0.6: (1.0000, 1.3587, 1.7329, 2.3544, 3.7786),
      1.0: (1.0, 1.6667, 2.5, 4.1667, 9.1667)}
ATTN = torch.tensor([[0.7, 0.2, 0.05, 0.05], [0.2, 0.5, 0.1, 0.2], [0.1, 0.3, 0.3, 0.3]], dtype=torch.float64)


@pytest.mark.parametrize("alpha", sorted(LP))
def test_length_penalty_matches_the_spec_table(alpha: float) -> None:
    for length, want in zip((1, 5, 10, 20, 50), LP[alpha]):
        assert length_penalty(length, alpha) == pytest.approx(want, abs=5e-5)
    assert length_penalty(10, 0.2) == pytest.approx(1.2011, abs=5e-5)


def test_coverage_example_of_the_spec() -> None:
    cov = ATTN.sum(0)
    torch.testing.assert_close(cov, torch.tensor([1.0, 1.0, 0.45, 0.55], dtype=torch.float64))
    assert float(coverage_penalty(cov, 0.2)) == pytest.approx(-0.27927, abs=5e-6)
    assert float(penalized_score(-4.0, 10, cov, alpha=0.2, beta=0.2)) == pytest.approx(-3.60948, abs=5e-6)
    # padded source positions do not count
    padded = torch.cat([cov, torch.tensor([0.0], dtype=torch.float64)])
    mask = torch.tensor([True, True, True, True, False])
    assert float(coverage_penalty(padded, 0.2, mask)) == pytest.approx(-0.27927, abs=5e-6)


def test_token_ids_agree_between_task_and_models() -> None:
    assert (translation.PAD, translation.UNK, translation.BOS, translation.EOS) == \
        (base.PAD, base.UNK, base.BOS, base.EOS)


def test_bad_decode_settings_are_config_errors() -> None:
    for kw in ({"beam": 0}, {"alpha": -1.0}, {"max_len_extra": -1}, {"max_len_ratio": float("nan")}):
        with pytest.raises(ConfigError):
            DecodeConfig(**kw)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = dict(seqzoo.models.MODELS.get(name).conformance)
    return seqzoo.create_model(name, vocab_size=12, **kw).eval()


@pytest.mark.parametrize("name", ["gnmt_small", "convs2s_small"])
def test_outputs_respect_the_max_length_and_batching(name: str) -> None:
    model = _model(name)
    src = torch.randint(4, 12, (3, 5), generator=torch.Generator().manual_seed(1))
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 3, 1]).unsqueeze(1)
    for hyps in (greedy(model, src, mask, max_len_ratio=1.0, max_len_extra=2),
                 beam_search(model, src, mask, beam=3, max_len_ratio=1.0, max_len_extra=2)):
        assert [len(h) <= n + 2 for h, n in zip(hyps, (5, 3, 1))] == [True] * 3
        assert all(base.EOS not in h and base.BOS not in h for h in hyps)
    # each sentence decodes the same alone as in the batch
    alone = [beam_search(model, src[i:i + 1, :n], beam=3)[0] for i, n in enumerate((5, 3, 1))]
    assert beam_search(model, src, mask, beam=3) == alone
    assert [greedy(model, src[i:i + 1, :n])[0] for i, n in enumerate((5, 3, 1))] == greedy(model, src, mask)


class _Table(base.Seq2SeqModel):
    """A fixed next-token table: a short hypothesis [5] has the best log-probability, a long one [6, 6, 6, 6] the
    best log-probability per length-penalized score at large alpha."""

    vocab_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode(self, inputs, mask=None):
        return {"mask": self.source_mask(inputs, mask)}

    def start(self, memory):
        return {"t": torch.zeros(memory["mask"].shape[0], dtype=torch.long), "last": torch.zeros(
            memory["mask"].shape[0], dtype=torch.long), "attn": None}

    def step(self, prev_t, state):
        t = state["t"]
        logp = torch.full((prev_t.shape[0], 8), -20.0)
        first = t == 0
        logp[first, 5] = -0.9  # short path: 5, EOS
        logp[first, 6] = -1.0  # long path: 6 6 6 6 EOS
        after5 = prev_t == 5
        logp[after5, base.EOS] = -0.1
        after6 = (prev_t == 6) & ~first
        logp[after6, 6] = torch.where(t[after6] < 4, -0.05, -20.0)
        logp[after6, base.EOS] = torch.where(t[after6] >= 4, -0.05, -5.0)
        logp[first & (prev_t == 6), 6] = -0.05
        return logp, {"t": t + 1, "last": prev_t, "attn": None}


def test_finished_hypotheses_are_compared_by_the_penalized_score() -> None:
    model = _Table()
    src = torch.tensor([[4, 4, 4]])
    # alpha = 0: the short hypothesis has the larger log-probability (-1.0 vs -1.2)
    assert beam_search(model, src, beam=2, alpha=0.0, beta=0.0) == [[5]]
    # a large alpha divides the long hypothesis' log-probability by a larger lp: it wins
    assert beam_search(model, src, beam=2, alpha=3.0, beta=0.0) == [[6, 6, 6, 6]]
