"""The speed harness runs on tiny sizes and returns well-formed rows (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from seqzoo.experiments import bench

TINY = dict(batch=2, seq_len=5, input_size=3, hidden=4, repeats=2, warmup=1, threads=1, step_len=3)


def test_run_bench_rows_and_anchor():
    env: dict = {}
    rows = bench.run_bench(["lstm", "gru_native"], env=env, **TINY)
    assert [r["model"] for r in rows] == ["torch.nn.LSTM", "lstm", "gru_native"]
    for r in rows:
        assert set(bench.ROW_KEYS) <= set(r)
        assert r["precision"] == "fp32"
        assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and r["fwd_tokens_per_s"] > 0
        assert len(r["fwd_ms_rounds"]) == TINY["repeats"]
        assert r["step_us"] is not None and r["step_us"] > 0
        assert r["peak_mb"] is not None and r["peak_mb"] >= 0
        assert r["saved_mb"] is not None and r["saved_mb"] > 0  # every recurrent layer saves activations
    anchor = rows[0]
    assert anchor["fwd_ratio"] == 1.0 and anchor["fwdbwd_ratio"] == 1.0 and anchor["step_ratio"] == 1.0
    assert rows[1]["fwd_ratio"] == pytest.approx(rows[1]["fwd_ms"] / anchor["fwd_ms"])
    assert env["torch"] and env["threads"] == 1 and "loadavg_end" in env
    table = bench.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| lstm | fp32 |" in table


def test_bf16_rows_and_gru_anchor():
    rows = bench.run_bench(["lstm"], bf16=True, anchor="gru", memory=False, **TINY)
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("torch.nn.GRU", "fp32"), ("lstm", "fp32"), ("torch.nn.GRU", "bf16-autocast"), ("lstm", "bf16-autocast"),
    ]
    assert rows[0]["fwdbwd_ratio"] == 1.0 and rows[2]["peak_mb"] is None
    assert "—" in bench.format_table(rows)


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--models", "rnn_tanh", "--batch", "2", "--seq-len", "4", "--input-size", "3", "--hidden", "4",
                     "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory", "--clock", "cpu",
                     "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {"settings", "environment", "rows"} <= set(data)
    assert [r["model"] for r in data["rows"]] == ["torch.nn.LSTM", "rnn_tanh"]
    assert data["environment"]["threads"] == 1 and data["settings"]["clock"] == "cpu"
    assert "| rnn_tanh | fp32 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(anchor="transformer"), "anchor must be one of"),
        (dict(batch=0), "batch must be a positive integer"),
        (dict(threads=0), "threads must be a positive integer"),
        (dict(clock="gpu"), "clock must be one of"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.run_bench(["lstm"], **{**TINY, **kwargs})


def test_unknown_model_is_an_error():
    with pytest.raises((KeyError, ValueError), match="lstmm|lstm"):
        bench.run_bench(["lstmm"], **TINY)


def test_native_usdt_lines_dropped_other_stderr_kept(capfd):
    import os

    with bench._drop_native_usdt_lines():
        os.write(2, b"USDT:2026 profiler_start\nreal warning\nUSDT:2026 profiler_stop\n")
    err = capfd.readouterr().err
    assert "USDT" not in err and "real warning" in err
