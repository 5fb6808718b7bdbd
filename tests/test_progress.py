"""Training progress off a terminal is a periodic plain log line, on a terminal a bar, and nothing when disabled."""

from __future__ import annotations

import logging

import pytest

from seqzoo.training import train
from seqzoo.training.progress import Progress, on_terminal


class FakeTTY:
    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def test_terminal_detection(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", FakeTTY())
    assert on_terminal()
    monkeypatch.setenv("CI", "true")
    assert not on_terminal()


def test_off_a_terminal_logs_plain_lines_with_step_loss_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="seqzoo.training")
    bar = Progress(10, desc="run-a", terminal=False, interval=0.0)
    bar.update(1)
    bar.set_postfix(loss="0.5", tok_s="1e+03")
    bar.update(4)
    bar.close()
    bar.update(1)  # after close: silent
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("run-a: step 1/10 (10%)")
    assert "\r" not in "".join(lines)
    assert lines[1].startswith("run-a: step 5/10 (50%), loss=0.5, tok_s=1e+03, ETA ")


def test_interval_limits_the_lines(caplog):
    caplog.set_level(logging.INFO, logger="seqzoo.training")
    bar = Progress(100, terminal=False, interval=3600.0)
    for _ in range(100):
        bar.update()
    assert caplog.records == []


def test_disabled_shows_nothing(caplog, capsys):
    caplog.set_level(logging.INFO, logger="seqzoo.training")
    bar = Progress(5, enabled=False, terminal=True, interval=0.0)
    bar.set_postfix(loss="1")
    bar.update(5)
    bar.close()
    assert caplog.records == []
    assert capsys.readouterr().err == ""


def test_on_a_terminal_draws_a_tqdm_bar(capsys):
    pytest.importorskip("tqdm")
    bar = Progress(4, desc="run-b", terminal=True)
    bar.update(2)
    bar.close()
    assert "run-b" in capsys.readouterr().err


def test_train_off_a_terminal_logs_progress(tmp_path, monkeypatch, caplog, capsys):
    """`seqzoo train` piped to a file used to be silent until the run ended."""
    monkeypatch.setenv("SEQZOO_PROGRESS_INTERVAL", "0")
    caplog.set_level(logging.INFO, logger="seqzoo.training")
    train("lstm", "adding", model_args={"d_model": 8}, task_args={"seq_len": 12, "n_valid": 32, "n_test": 32},
          config={"steps": 6, "log_every": 2, "eval_every": 6, "batch_size": 4, "tensorboard": False,
                  "progress": True}, out=tmp_path)
    lines = [r.getMessage() for r in caplog.records if "step " in r.getMessage()]
    assert [ln.split("step ")[1].split(" ")[0] for ln in lines] == [f"{i}/6" for i in range(1, 7)]
    assert "loss=" in lines[-1] and "tok_s=" in lines[-1]
    assert "\r" not in capsys.readouterr().err  # no tqdm frames in a log


def test_train_with_progress_false_logs_no_progress(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SEQZOO_PROGRESS_INTERVAL", "0")
    caplog.set_level(logging.INFO, logger="seqzoo.training")
    train("lstm", "adding", model_args={"d_model": 8}, task_args={"seq_len": 12, "n_valid": 32, "n_test": 32},
          config={"steps": 3, "eval_every": 3, "batch_size": 4, "tensorboard": False, "progress": False},
          out=tmp_path)
    assert not [r for r in caplog.records if "step " in r.getMessage()]
