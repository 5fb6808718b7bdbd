"""benchmarks/bench_gcnn_pairs.py: its FLOP count includes the fused LSTM, and one tiny end-to-end call."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from seqzoo.experiments.param_match import token_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gcnn_pairs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gcnn_pairs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lstm_model_flops_include_the_recurrence(bench):
    lstm = token_model("lstm_native", {"d_model": 24, "head": "adaptive"}, 100)
    h = 24
    per_token = bench.flop_per_token(lstm, 2, 5, 100)
    assert per_token > 2 * 4 * h * (h + h)  # recurrence plus the head's products


def test_tiny_pair_prints_the_table(bench, capsys):
    bench.main(["--gcnn", "2x16", "--lstm", "24", "--vocab", "100", "--batch", "2", "--length", "5", "--rounds",
                "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "LSTM-24:" in out and "| 2x16 |" in out


def test_bad_size_is_one_line(bench):
    with pytest.raises(SystemExit):
        bench.main(["--gcnn", "8by128"])
