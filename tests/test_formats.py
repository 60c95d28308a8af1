"""Step-label formats: round trips on the real samples in tests/data/formats, clear errors on bad input."""

from __future__ import annotations

import json

import pytest

from ponder.collect.formats import read_format, read_math_aps, shepherd_row, write_format
from ponder.collect.records import StepRecord, read_records
from ponder.tasks.base import TaskError

SAMPLES = {"prm800k": "prm800k.sample.jsonl", "math-shepherd": "math-shepherd.sample.jsonl",
           "math-aps": "math-aps.sample.jsonl"}


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_math_shepherd_and_math_aps_samples_round_trip_byte_for_byte(data_dir):
    original = lines(data_dir / "formats" / SAMPLES["math-shepherd"])
    records = read_format(data_dir / "formats" / SAMPLES["math-shepherd"], "math-shepherd")
    assert [shepherd_row(r) for r in records] == original
    assert records[0].steps[0].startswith("Janet spends 3 hours + 5 hours") and records[0].labels[-1] == 0.0
    aps = read_math_aps(data_dir / "formats" / SAMPLES["math-aps"])
    assert [a.to_dict() for a in aps] == lines(data_dir / "formats" / SAMPLES["math-aps"])
    assert all(0 <= v <= 1 for a in aps for _, v in a.states)


def test_prm800k_follows_the_chosen_completions_and_stops_at_the_rejected_step(data_dir):
    records = read_format(data_dir / "formats" / SAMPLES["prm800k"], "prm800k")
    raw = lines(data_dir / "formats" / SAMPLES["prm800k"])
    assert len(records) == len(raw)
    first = raw[0]["label"]["steps"]
    assert records[0].steps[0] == first[0]["completions"][first[0]["chosen_completion"]]["text"]
    found_error = [r for r, x in zip(records, raw) if x["label"]["finish_reason"] == "found_error"]
    assert found_error and all(r.labels[-1] == 0.0 for r in found_error)  # the rejected step ends it
    human = raw[4]["label"]["steps"][-2]  # every completion rejected, then a person wrote the step
    assert records[4].steps[-1] == human["human_completion"]["text"] and records[4].labels[-1] == 1.0


@pytest.mark.parametrize("source", ["prm800k", "math-shepherd", "math-aps"])
@pytest.mark.parametrize("target", ["ponder", "prm800k", "math-shepherd", "openr", "trl"])
def test_every_sample_converts_to_every_writable_format_and_reads_back(data_dir, tmp_path, source, target):
    records = read_format(data_dir / "formats" / SAMPLES[source], source)
    out = tmp_path / "out.jsonl"
    written = write_format(records, out, target)
    back = read_format(out, target)
    assert len(back) == written > 0
    kept = [r for r in records if None not in r.hard()]
    if target == "ponder":
        assert back == records
    elif target == "prm800k":  # PRM800K trajectories end at the first rejected step
        for a, b in zip(kept, back):
            cut = next((i + 1 for i, h in enumerate(a.hard()) if not h), len(a.steps))
            assert b.steps == a.steps[:cut] and b.hard() == a.hard()[:cut]
    else:
        assert [(b.question, b.steps, b.hard()) for b in back] == [(a.question, a.steps, a.hard()) for a in kept]
    if target != "ponder":  # and a second trip through the format changes nothing
        again = tmp_path / "again.jsonl"
        write_format(back, again, target)
        assert again.read_text() == out.read_text()


def test_math_aps_states_become_records_labelled_at_their_last_step(data_dir):
    records = read_format(data_dir / "formats" / SAMPLES["math-aps"], "math-aps")
    assert records and all(r.labels[-1] is not None for r in records)
    assert any(r.labels[0] is None for r in records if len(r.steps) > 1)
    # an unlabelled step before a good one is good: a correct completion passes through it
    good_last = next(r for r in records if r.labels[-1] and len(r.steps) > 1)
    assert all(good_last.hard())


@pytest.mark.parametrize("fmt,line,message", [
    ("math-shepherd", '{"input": "Q Step 1: a ки", "label": "Q Step 1: a ?"}', "expected \\+ or -"),
    ("math-shepherd", '{"input": "Q Step 1: a ки", "label": "Q Step 1: b +"}', "label text differs"),
    ("math-shepherd", '{"input": "no steps", "label": "no steps"}', "no 'Step 1:'"),
    ("prm800k", '{"question": {"problem": "q"}}', "missing field 'label'"),
    ("math-aps", '{"question": "q", "final_answer": "1", "reasoning_steps": [{"solution_prefix": "q", '
                 '"mc_value": 2}]}', "outside"),
    ("trl", '{"prompt": "q", "completions": ["a"], "labels": [1, 0]}', "one boolean per completion"),
    ("openr", '{"question": "q", "process": "a ки\\nb ки\\n", "label": ["+"]}', "2 tagged steps"),
    ("ponder", '{"question": "q", "steps": ["a"], "labels": [0.5, 1]}', "1 steps but 2 labels"),
])
def test_malformed_records_name_the_file_and_line(tmp_path, fmt, line, message):
    path = tmp_path / "bad.jsonl"
    good = {"ponder": StepRecord("q", ["a"], [1.0]).to_dict()}.get(fmt)
    path.write_text((json.dumps(good) + "\n" if good else "\n") + line + "\n")
    with pytest.raises(TaskError, match=f"bad.jsonl:2: .*{message}"):
        if fmt == "math-aps":
            read_math_aps(path)
        else:
            read_format(path, fmt)


def test_not_json_and_unknown_formats_are_clear_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "q", "steps": [], "labels": []}\n{oops\n')
    with pytest.raises(TaskError, match=r"x\.jsonl:2: not JSON"):
        read_records(path)
    with pytest.raises(TaskError, match="unknown format"):
        read_format(path, "csv")
    with pytest.raises(TaskError, match="cannot write format 'math-aps'"):
        write_format([], tmp_path / "y.jsonl", "math-aps")
    with pytest.raises(TaskError, match="cannot read"):
        read_records(tmp_path / "missing.jsonl")


def test_hard_labels_follow_math_shepherd():
    record = StepRecord("q", ["a", "b", "c"], [None, 0.25, 0.0])
    assert record.hard() == [True, True, False]
    assert record.hard(threshold=0.5) == [None, False, False]
    with pytest.raises(ValueError, match="outside"):
        StepRecord("q", ["a"], [1.5])


def test_math_aps_records_written_by_a_collection_keep_the_formats_field_order(data_dir, tmp_path):
    from ponder.jsonl import ResumableJsonl

    sample = data_dir / "formats" / SAMPLES["math-aps"]
    out = ResumableJsonl(tmp_path / "math-aps.jsonl", key=lambda r: r["question"], what="MATH-APS record")
    for record in read_math_aps(sample):
        out.append(record.to_dict())
    written = [json.loads(line) for line in (tmp_path / "math-aps.jsonl").read_text().splitlines()]
    assert [list(r) for r in written] == [list(json.loads(line)) for line in sample.read_text().splitlines()]
