"""Data component: sources, standardization, malformed-record accounting, seeded split (real files, no fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.data.fields import ConfigError
from components.data.prepare import DataConfig, DataError, load_split, prepare_dataset
from components.data.sources import default_source
from components.manifest import verify_manifest

REPO = Path(__file__).resolve().parents[3]


def good(i: int, *, system: bool = False) -> dict:
    turns = [{"from": "human", "value": f"question {i}"}, {"from": "gpt", "value": f"answer {i}"}]
    if system:
        turns.insert(0, {"from": "system", "value": "be brief"})
    return {"id": f"g{i}", "conversations": turns}


MALFORMED = [
    ("not_an_object", ["a", "list"]),
    ("no_conversation", {"id": "x1", "text": "plain"}),
    ("empty_conversation", {"id": "x2", "conversations": []}),
    ("bad_turn", {"id": "x3", "conversations": [{"from": "human"}, {"from": "gpt", "value": "hi"}]}),
    ("unknown_role", {"id": "x4", "conversations": [{"from": "narrator", "value": "once"},
                                                     {"from": "gpt", "value": "upon"}]}),
    ("empty_turn", {"id": "x5", "conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "?"}]}),
    ("not_alternating", {"id": "x6", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"},
                                                        {"from": "gpt", "value": "c"}]}),
    ("starts_with_assistant", {"id": "x7", "conversations": [{"from": "gpt", "value": "hello"},
                                                              {"from": "human", "value": "hi"}]}),
    ("no_assistant_reply", {"id": "x8", "conversations": [{"from": "human", "value": "anyone?"}]}),
    ("misplaced_system", {"id": "x9", "conversations": [{"from": "human", "value": "a"},
                                                         {"from": "system", "value": "b"},
                                                         {"from": "gpt", "value": "c"}]}),
]


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_malformed_conversations_are_counted_reported_and_skipped(tmp_path):
    rows = [good(i) for i in range(12)] + [r for _, r in MALFORMED]
    # a trailing unanswered user turn is trimmed, not rejected
    rows.append({"id": "t1", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                                                {"from": "human", "value": "and?"}]})
    src = write_jsonl(tmp_path / "mixed.jsonl", rows, extra_lines=["{not json"])

    stats = prepare_dataset(DataConfig(source=str(src), heldout_size=3), tmp_path / "out")

    expected = {reason: 1 for reason, _ in MALFORMED}
    expected["invalid_json"] = 1
    assert stats.skipped_by_reason == expected
    assert stats.skipped == len(MALFORMED) + 1
    assert stats.records_read == len(rows) + 1
    assert stats.kept == 13 and stats.trimmed_trailing_user == 1
    assert (stats.train, stats.heldout) == (10, 3)
    assert {s["reason"] for s in stats.skipped_samples} == set(expected)
    # the report on disk says the same, and the manifest covers every output file
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert on_disk["skipped_by_reason"] == expected
    verify_manifest(tmp_path / "out", kind="dataset")
    out_rows = read_jsonl(tmp_path / "out" / "train.jsonl") + read_jsonl(tmp_path / "out" / "heldout.jsonl")
    assert len(out_rows) == 13
    for row in out_rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(set(m) == {"role", "content"} for m in row["messages"])
    trimmed = [r for r in out_rows if r["messages"][0]["content"] == "q"]
    assert [m["role"] for m in trimmed[0]["messages"]] == ["user", "assistant"]


def test_split_is_seeded_and_deterministic(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [good(i, system=i % 3 == 0) for i in range(80)])
    a = prepare_dataset(DataConfig(source=str(src), seed=7), tmp_path / "a")
    b = prepare_dataset(DataConfig(source=str(src), seed=7), tmp_path / "b")
    c = prepare_dataset(DataConfig(source=str(src), seed=8), tmp_path / "c")
    assert (a.train, a.heldout) == (30, 50)  # held-out defaults to 50
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "heldout.jsonl").read_bytes() != (tmp_path / "c" / "heldout.jsonl").read_bytes()
    held = {r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "a" / "heldout.jsonl")}
    train = {r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "a" / "train.jsonl")}
    assert not held & train and len(held | train) == 80
    system_rows = [r for r in read_jsonl(tmp_path / "a" / "train.jsonl") if r["messages"][0]["role"] == "system"]
    assert system_rows and all(r["messages"][1]["role"] == "user" for r in system_rows)


def test_json_array_jsonl_and_parquet_sources_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [good(i) for i in range(30)]
    # HF-chat form too, with content given as text parts
    rows += [{"messages": [{"role": "user", "content": [{"type": "text", "text": f"hi {i}"}]},
                           {"role": "assistant", "content": f"hello {i}"}]} for i in range(5)]
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", rows)
    def as_messages(row: dict) -> dict:  # Parquet wants one column type: plain-string messages everywhere
        if "conversations" in row:
            return {"messages": [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                                 for t in row["conversations"]]}
        return {"messages": [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                              else "".join(p["text"] for p in m["content"])} for m in row["messages"]]}

    pq.write_table(pa.Table.from_pylist([as_messages(r) for r in rows]), tmp_path / "d.parquet")
    outputs = []
    for name in ("d.json", "d.jsonl", "d.parquet"):
        stats = prepare_dataset(DataConfig(source=str(tmp_path / name), heldout_size=5), tmp_path / f"o-{name}")
        assert (stats.kept, stats.skipped) == (35, 0), name
        outputs.append((tmp_path / f"o-{name}" / "train.jsonl").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    both = load_split(tmp_path / "o-d.json") + load_split(tmp_path / "o-d.json", "heldout.jsonl")
    assert sum(m["content"] == "hi 3" for r in both for m in r) == 1


def test_packaged_sharegpt_is_streamed_with_max_examples(tmp_path):
    source = default_source()
    assert os.path.getsize(source) > 50_000_000  # the real 125 MB file, not a sample
    started = time.perf_counter()
    stats = prepare_dataset(DataConfig(max_examples=120, heldout_size=20), tmp_path / "out")
    elapsed = time.perf_counter() - started
    assert stats.source == source
    assert (stats.kept, stats.train, stats.heldout) == (120, 100, 20)
    assert stats.records_read < 1000  # stopped early instead of parsing the whole array
    assert elapsed < 10, f"reading 120 conversations took {elapsed:.1f}s: the file was not streamed"


def test_truncated_json_file_is_a_clear_error(tmp_path):
    text = json.dumps([good(i) for i in range(5)])
    (tmp_path / "cut.json").write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(DataError, match="source: .*cut.json"):
        prepare_dataset(DataConfig(source=str(tmp_path / "cut.json"), heldout_size=1), tmp_path / "out")


def test_too_small_for_heldout_names_the_field(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [good(i) for i in range(10)])
    with pytest.raises(DataError, match="heldout_size"):
        prepare_dataset(DataConfig(source=str(src)), tmp_path / "out")


def test_empty_dataset_fails_clearly_before_any_model_library_loads(tmp_path):
    """The CLI path on an all-malformed file: exit 2, one line naming the source, no traceback, no torch import."""
    src = write_jsonl(tmp_path / "bad.jsonl", [r for _, r in MALFORMED])
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['x', '--out', {str(tmp_path / 'out')!r}, '--set', 'source={src}']\n"
        "try:\n    runpy.run_module('components.data', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('LOADED', [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])\n"
        "    raise\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "data: error: source: no usable conversation" in proc.stderr and "bad.jsonl" in proc.stderr
    assert "LOADED []" in proc.stdout
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_missing_source_and_offline_hub_id_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="source: .*nope.jsonl"):
        prepare_dataset(DataConfig(source=str(tmp_path / "nope.jsonl")), tmp_path / "o1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub dataset 'someone/not-here'"):
        prepare_dataset(DataConfig(source="someone/not-here"), tmp_path / "o2")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"heldout_size": "-1"}, "heldout_size"),
        ({"max_examples": "abc"}, "max_examples"),
        ({"max_examples": "10", "heldout_size": "50"}, "max_examples"),
        ({"seed": "1.5"}, "seed"),
        ({"heldout": "3"}, "heldout"),
    ],
)
def test_invalid_data_config_names_the_field(values, field):
    with pytest.raises(ConfigError) as info:
        DataConfig.from_dict(values)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_data_config_round_trips_strings():
    cfg = DataConfig.from_dict({"max_examples": "300", "heldout_size": "20", "subset": "none", "seed": "1"})
    assert (cfg.max_examples, cfg.heldout_size, cfg.subset, cfg.seed) == (300, 20, None, 1)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
