"""The ``babi`` task: parsing, malformed files (file and line named), splits, batches, metrics and baseline.

Most tests write small story folders of their own (the format is the point); the real bAbI 1k files are used only
where noted, and skipped with the reason when ../shared/data is absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from seqzoo.errors import ConfigError, DataError
from seqzoo.tasks import create_task
from seqzoo.tasks.babi import parse_stories, trim
from seqzoo.tasks.data_files import MissingDataError

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Sandra moved to the garden.
6 Where is Daniel? \thallway\t4
1 Sandra travelled to the office.
2 Where is Sandra? \toffice\t1
"""
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "babi" / "en"


def write_tasks(root: Path, files: dict[str, str], gz: bool = False) -> Path:
    folder = root / "babi" / "en"
    folder.mkdir(parents=True)
    for name, text in files.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wt") as f:
                f.write(text)
        else:
            (folder / name).write_text(text)
    return root


def many(n: int) -> str:
    """``n`` stories of the STORY kind (3 questions per story... 2 here), varied names."""
    places = ["bathroom", "hallway", "garden", "office", "kitchen"]
    lines = []
    for i in range(n):
        a, b = places[i % 5], places[(i + 2) % 5]
        lines += [f"1 Mary moved to the {a}.", f"2 John went to the {b}.", f"3 Where is Mary? \t{a}\t1",
                  f"4 Where is John? \t{b}\t2"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_tasks(tmp_path, {"qa1_single-supporting-fact_train.txt": many(20),
                                  "qa1_single-supporting-fact_test.txt": many(5),
                                  "qa2_two-supporting-facts_train.txt": many(10),
                                  "qa2_two-supporting-facts_test.txt": many(5)}, gz=True)


def test_parse_keeps_statements_only_and_maps_supporting_facts() -> None:
    qs = parse_stories(STORY, "x.txt", 1)
    assert [q.answer for q in qs] == ["bathroom", "hallway", "office"]
    assert qs[1].story == [["mary", "moved", "to", "the", "bathroom"], ["john", "went", "to", "the", "hallway"],
                           ["daniel", "went", "back", "to", "the", "hallway"], ["sandra", "moved", "to", "the",
                                                                                  "garden"]]
    assert qs[1].question == ["where", "is", "daniel"] and qs[1].supports == [2] and qs[1].line == 6
    assert qs[2].story == [["sandra", "travelled", "to", "the", "office"]]  # a new story starts at id 1


@pytest.mark.parametrize(("text", "line", "words"), [
    ("1 Mary moved.\n3 John went.\n", 2, "out of order"),
    ("1 Mary moved.\n2 Where is Mary? \t\t1\n", 2, "without an answer"),
    ("1 Mary moved.\n2 Where is Mary?\n3 John left.\n4 Where? \tx\t1\n", None, None),  # no tab: a statement
    ("1 Mary moved.\n2 Where is Mary? \tkitchen\t5\n", 2, "supporting fact"),
    ("1 Mary moved.\nfoo bar\n", 2, "integer id"),
])
def test_malformed_lines_name_file_and_line(text: str, line: int | None, words: str | None) -> None:
    if line is None:
        parse_stories(text, "f.txt", 1)
        return
    with pytest.raises(DataError) as info:
        parse_stories(text, "f.txt", 1)
    assert f"f.txt, line {line}:" in str(info.value) and words in str(info.value)


def test_a_test_answer_never_seen_in_training_names_file_and_line(tmp_path: Path) -> None:
    root = write_tasks(tmp_path, {"qa1_x_train.txt": many(3),
                                  "qa1_x_test.txt": "1 Mary moved to the garden.\n2 Where is Mary? \tgarden\t1\n"
                                                    "3 Where is Mary? \tcellar\t1\n"})
    with pytest.raises(DataError) as info:
        create_task("babi", tasks=1, data_dir=str(root))
    msg = str(info.value)
    assert "qa1_x_test.txt, line 3:" in msg and "'cellar'" in msg and "\n" not in msg


def test_absent_task_files_and_bad_task_ids(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="task 3 needs"):
        create_task("babi", tasks=3, data_dir=str(folder))
    for bad in (0, 21, "2,2", "one", "1-3"):
        with pytest.raises(ConfigError, match="tasks"):
            create_task("babi", tasks=bad, data_dir=str(folder))
    with pytest.raises(MissingDataError, match="qa"):
        create_task("babi", data_dir=str(tmp_path / "nothing"))


def test_splits_batches_and_vocabulary(folder: Path) -> None:
    task = create_task("babi", tasks="all", data_dir=str(folder))
    assert task.task_ids == [1, 2]
    train, valid, test = (task.build(s) for s in ("train", "valid", "test"))
    # 10% of each task's training questions: 4 of 40 (task 1) and 2 of 20 (task 2)
    assert len(valid) == 6 and len(train) == 54 and len(test) == 20
    assert torch.bincount(valid.tensors["task_id"]).tolist()[1:] == [4, 2]
    again = create_task("babi", tasks="all", data_dir=str(folder), split_seed=0).build("valid")
    assert torch.equal(again.tensors["inputs"], valid.tensors["inputs"])
    other = create_task("babi", tasks="all", data_dir=str(folder), split_seed=1).build("valid")
    assert not torch.equal(other.tensors["targets"], valid.tensors["targets"]) or \
        not torch.equal(other.tensors["story"], valid.tensors["story"])
    assert task.vocab[0] == "<nil>" and task.spec.d_output == task.spec.vocab_size == len(task.vocab)
    assert task.spec.model_kwargs()["memory_size"] == 50
    # the second question of a story ("Where is John?", supported by statement 2) sees both statements, the
    # latest first, and its supporting fact sits in slot 0
    row = next(i for i in range(len(test)) if task.word(int(test.tensors["inputs"][i, 2])) == "john")
    story = test.tensors["story"][row]
    words = [[task.word(int(w)) for w in s if w] for s in story]
    assert words[0][:2] == ["john", "went"] and words[1][:2] == ["mary", "moved"] and words[2:] == [[]] * (
        len(words) - 2)
    assert test.tensors["supports"][row].tolist() == [0, -1, -1]
    assert task.word(int(test.tensors["targets"][row])) in ("bathroom", "hallway", "garden", "office", "kitchen")


def test_memory_size_keeps_the_latest_statements(tmp_path: Path) -> None:
    text = "".join(f"{i} Mary moved to the {'garden' if i % 2 else 'office'}.\n" for i in range(1, 8))
    text += "8 Where is Mary? \tgarden\t7\n9 Where is Mary? \tgarden\t1\n"
    root = write_tasks(tmp_path, {"qa1_x_train.txt": text * 1, "qa1_x_test.txt": text})
    task = create_task("babi", tasks=1, memory_size=3, data_dir=str(root))
    test = task.build("test")
    assert test.tensors["story"].shape[1] == 3
    assert test.tensors["supports"][0].tolist() == [0, -1, -1]  # statement 7 = the latest
    assert test.tensors["supports"][1].tolist() == [-1, -1, -1]  # statement 1 fell out of the memory


def test_training_batches_are_trimmed_and_shuffled(folder: Path) -> None:
    task = create_task("babi", data_dir=str(folder))
    b = task.train_batch(0, 4, 0)
    assert b["story"].shape[0] == 4 and b["story"].shape[1] <= 2
    assert bool(b["story"][:, -1].ne(0).any()) and bool(b["story"][..., -1].ne(0).any())  # nothing left to cut
    full = trim({"story": torch.zeros(2, 5, 4, dtype=torch.int64), "inputs": torch.zeros(2, 3, dtype=torch.int64)})
    assert full["story"].shape == (2, 1, 1) and full["inputs"].shape == (2, 1)


def test_error_per_task_and_mean(folder: Path) -> None:
    task = create_task("babi", data_dir=str(folder))
    test = task.build("test")
    logits = torch.nn.functional.one_hot(test.tensors["targets"], task.spec.d_output).double() * 10
    t2 = test.tensors["task_id"] == 2
    logits[t2.nonzero()[:3, 0]] = logits[t2.nonzero()[:3, 0]].roll(1, -1)  # 3 of task 2's 10 wrong
    sums = task.metric_sums(logits, test.tensors)
    assert sums["error_t1"] == (0.0, 10.0) and sums["error_t2"] == (300.0, 10.0)
    means = {k: s / c for k, (s, c) in sums.items()}
    assert task.derived_metrics(means)["error"] == pytest.approx(15.0)  # mean of 0% and 30%
    base = task.baseline()
    assert set(base) == {"error", "error_t1", "error_t2"} and 0 <= base["error"] <= 100


@pytest.mark.skipif(not REAL.is_dir(), reason="the bAbI data (../shared/data/babi/en) is absent")
def test_real_babi_1k_parses_with_the_paper_sizes() -> None:
    task = create_task("babi", data_dir=str(REAL.parents[1]))
    assert task.task_ids == list(range(1, 21))
    sizes = {s: len(task.build(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 18000, "valid": 2000, "test": 20000}
    assert task.build("test").tensors["story"].shape[1] == 50  # task 3's long stories fill the memory
    assert "apple,football" in task.vocab  # task 8's list answers are single tokens
