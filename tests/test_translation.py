"""The ``translation`` task on a small synthetic corpus: file errors name the file and line, the sentencepiece
model is cached by file hashes and options, length buckets and token caps, BLEU/chrF on detokenized text, run
files, and the int8 GNMT copy."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pytest
import torch

import seqzoo
from seqzoo.errors import ConfigError, DataError
from seqzoo.models.seq2seq.decoding import DecodeConfig
from seqzoo.tasks import create_task
from seqzoo.tasks import translation as tr

pytest.importorskip("sentencepiece", reason="the translate extra (sentencepiece) is not installed")
pytest.importorskip("sacrebleu", reason="the translate extra (sacrebleu) is not installed")

WORDS = {"ein": "a", "hund": "dog", "katze": "cat", "läuft": "runs", "schläft": "sleeps", "rot": "red",
         "groß": "big", "klein": "small", "im": "in the", "park": "park", "haus": "house"}


def corpus(root: Path, n: int = 120, gz: bool = True) -> Path:
    g = torch.Generator().manual_seed(0)
    keys = list(WORDS)
    for split, size in (("train", n), ("val", 20), ("test", 20)):
        de, en = [], []
        for _ in range(size):
            words = [keys[int(i)] for i in torch.randint(0, len(keys), (int(torch.randint(2, 7, (1,), generator=g)),),
                                                          generator=g)]
            de.append(" ".join(words).capitalize() + ".")
            en.append(" ".join(WORDS[w] for w in words).capitalize() + ".")
        for lang, lines in (("de", de), ("en", en)):
            data = ("\n".join(lines) + "\n").encode()
            if gz:
                (root / f"{split}.{lang}.gz").write_bytes(gzip.compress(data))
            else:
                (root / f"{split}.{lang}").write_bytes(data)
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEQZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_run(tmp_path: Path, bleu_splits: str):
    """A 2-step ConvS2S run on the synthetic corpus in ``tmp_path/data``: ``(data folder, TrainResult)``."""
    from seqzoo.training import train

    (tmp_path / "data").mkdir()
    data = corpus(tmp_path / "data")
    res = train("convs2s_small", "translation", model_args={"d_model": 8, "d_embed": 8, "d_out_embed": 8},
                task_args={"folder": ".", "data_dir": str(data), "spm_vocab": 60, "bleu_splits": bleu_splits},
                config={"steps": 2, "batch_size": 8, "eval_every": 2, "progress": False, "tensorboard": False},
                out=tmp_path / "runs", index=False)
    return data, res


def make(root: Path, **kw) -> tr.TranslationTask:
    return create_task("translation", **{"folder": ".", "data_dir": str(root), "spm_vocab": 60, **kw})


def test_builds_from_any_folder_and_caches_the_wordpiece_model(tmp_path: Path, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    task = make(corpus(tmp_path))
    assert task.spec.extra["splits"] == {"train": "train", "valid": "val", "test": "test"}
    assert len(list((cache / "spm").glob("*.model"))) == 1
    import sentencepiece

    def boom(**_):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(sentencepiece.SentencePieceTrainer, "train", boom)
    again = make(tmp_path)  # same files and options: read from the cache
    assert again.wordpieces.model_bytes == task.wordpieces.model_bytes
    with pytest.raises(AssertionError, match="retrained"):
        make(tmp_path, spm_vocab=61)  # other options: another model
    assert task.run_files()["spm.model"] == task.wordpieces.model_bytes
    text = task.text["test"][1][:3]
    assert task.wordpieces.decode(task.wordpieces.encode(text)) == text  # detokenizes to the raw text


def test_batches_are_length_buckets_and_respect_the_token_cap(tmp_path: Path, cache: Path) -> None:
    task = make(corpus(tmp_path, gz=False), max_tokens=60)
    b = task.train_batch(0, 8)
    assert b["inputs"].shape[0] * max(b["inputs"].shape[1], b["prev"].shape[1]) <= 60
    assert torch.equal(b["prev"][:, 1:][b["loss_mask"][:, 1:]], b["targets"][:, :-1][b["loss_mask"][:, 1:]])
    assert bool((b["targets"][b["loss_mask"]] != tr.PAD).all())
    plain = make(tmp_path)
    sizes = [plain.train_batch(s, 8)["inputs"].shape[0] for s in range(len(plain._plan(0, 8, 0)))]
    assert sum(sizes) == 120 and max(sizes) == 8
    b = plain.train_batch(3, 8)
    lens = b["mask"].sum(1)
    assert int(lens.max() - lens.min()) <= 3  # sorted by length: one bucket


@pytest.mark.parametrize(("content", "message"), [
    (b"Ein Hund.\n\nEine Katze.\n", "line 2: empty line"),
    (b"Ein Hund.\n\xff\xfe kaputt\n", "line 2: not valid UTF-8"),
    (b"Ein Hund.\n", "1 lines, but"),
])
def test_bad_files_name_the_file_and_line(tmp_path: Path, cache: Path, content: bytes, message: str) -> None:
    corpus(tmp_path, gz=False)
    (tmp_path / "train.de").write_bytes(content)
    with pytest.raises(DataError) as info:
        make(tmp_path)
    assert str(tmp_path / "train.de") in str(info.value) and message in str(info.value)


def test_bad_parameters_are_config_errors(tmp_path: Path, cache: Path) -> None:
    for kw, key in (({"beam": 0}, "beam"), ({"bleu_splits": "train"}, "bleu_splits"), ({"src": "en"}, "src")):
        with pytest.raises(ConfigError, match=key):
            make(corpus(tmp_path), **kw)


def test_bleu_of_the_references_is_100_and_decoding_runs(tmp_path: Path, cache: Path) -> None:
    task = make(corpus(tmp_path), bleu_splits="test", beam=2)
    refs = task.text["test"][1]
    assert tr.corpus_scores(refs, refs)["bleu"] == pytest.approx(100.0)
    torch.manual_seed(0)
    model = seqzoo.create_model("convs2s_small", vocab_size=task.spec.vocab_size, d_model=8, d_embed=8,
                                d_out_embed=8)
    m = task.decode_metrics(model, "test")
    assert set(m) == {"bleu", "chrf", "len_ratio"} and 0 <= m["bleu"] <= 100
    assert task.decode_metrics(model, "valid") == {}  # not in bleu_splits


def test_int8_gnmt_stays_close_to_float(tmp_path: Path) -> None:
    from seqzoo.models.seq2seq.gnmt import quantize_int8

    torch.manual_seed(0)
    model = seqzoo.create_model("gnmt_small", vocab_size=30, d_model=16).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_int8(model)
        src, prev = torch.randint(4, 30, (2, 6)), torch.randint(4, 30, (2, 5))
        a, b = model(src, prev=prev)[0], q(src, prev=prev)[0]
        assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in q.modules())
        torch.testing.assert_close(b, a, rtol=0, atol=0.05 * float(a.abs().max()) + 1e-3)
        from seqzoo.models.seq2seq.decoding import translate_ids

        assert len(translate_ids(q, src, None, DecodeConfig(beam=2))) == 2


def test_translate_command_uses_the_run_folder_only(tmp_path: Path, cache: Path, capsys) -> None:
    from seqzoo.cli.main import main

    data, res = tiny_run(tmp_path, bleu_splits="none")
    assert (res.run_dir / "spm.model").is_file()
    src = tmp_path / "in.de"
    src.write_text("Ein hund läuft.\nEine katze schläft im haus.\n")
    ref = tmp_path / "ref.en"
    ref.write_text("A dog runs.\nA cat sleeps in the house.\n")
    for p in data.iterdir():  # the data is gone: the run folder must be enough
        p.unlink()
    assert main(["translate", str(res.run_dir), "--input", str(src), "--ref", str(ref), "--beam", "2"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 2 and "BLEU" in out.err and "chrF" in out.err
    ref.write_text("A dog runs.\n")
    assert main(["translate", str(res.run_dir), "--input", str(src), "--ref", str(ref)]) == 2
    assert "1 reference lines" in capsys.readouterr().err


def test_late_steps_continue_the_epoch_plan(tmp_path: Path, cache: Path) -> None:
    task = make(corpus(tmp_path))
    per_epoch = len(task._plan(0, 8, 0))
    a = task.train_batch(3 * per_epoch + 2, 8)  # epoch 3, batch 2
    assert torch.equal(a["inputs"], collate_of(task, task._plan(3, 8, 0)[2])["inputs"])
    capped = make(tmp_path, max_tokens=60)
    n0, n1 = len(capped._plan(0, 8, 0)), len(capped._plan(1, 8, 0))
    b = capped.train_batch(n0 + n1 + 1, 8)
    assert torch.equal(b["inputs"], collate_of(capped, capped._plan(2, 8, 0)[1])["inputs"])


def collate_of(task: tr.TranslationTask, idx: list[int]) -> dict:
    src, tgt = task.ids["train"]
    return tr.collate([src[i] for i in idx], [tgt[i] for i in idx])


def test_a_rebuilt_run_reads_its_own_wordpiece_model(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys) -> None:
    """``seqzoo eval`` and the card's decoding rebuild the task from config.json: the ids must come from the run's
    own ``spm.model``, not from the cache (which may be gone, or hold another model), and a path stored in the
    config is not trusted."""
    import shutil

    from seqzoo.cli.main import main
    from seqzoo.training.runs import read_config, task_from_config

    data, res = tiny_run(tmp_path, bleu_splits="test")
    own = (res.run_dir / "spm.model").read_bytes()
    shutil.rmtree(cache)

    def no_training(*a, **k):
        raise AssertionError("the wordpiece model was retrained instead of read from the run folder")

    monkeypatch.setattr(tr, "train_wordpieces", no_training)
    cfg = read_config(res.run_dir)
    cfg["task_args"]["spm_model"] = str(tmp_path / "elsewhere.model")  # an edited config: ignored
    task = task_from_config(cfg, str(data), res.run_dir)
    assert task.wordpieces.model_bytes == own
    capsys.readouterr()
    assert main(["eval", str(res.run_dir), "--split", "test", "--data-dir", str(data)]) == 0
    assert "bleu" in capsys.readouterr().out  # with the run's decoding settings (its bleu_splits has test)
