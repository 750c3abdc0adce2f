"""The harness reproduces its committed reference records exactly (bit for bit, on the CPU).

``tests/records/harness/`` holds two records that the harness wrote *before* it became the
``pixelweight.train`` package with tasks (see their ``provenance.git_commit``), and the script
that made them. Rerunning that script's configuration today must give the same numbers: the
same loss at every log step, the same learning rates, validation metrics and recall-loss
class weights in the history, the same final validation and test metrics (all compared with
``==`` after the record's JSON round trip, which is exact for floats).
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from pixelweight.results import load_record
from pixelweight.train import SegmentationTask

HERE = Path(__file__).resolve().parent / "records" / "harness"
_spec = importlib.util.spec_from_file_location("make_harness_records", HERE / "make_records.py")
make_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_records)


def _skip_reason(record):
    """Bitwise equality holds for the same PyTorch and the same CPU kernels only."""
    if record.provenance.get("torch") != torch.__version__:
        return f"the record was made with torch {record.provenance.get('torch')}, this is {torch.__version__}"
    capability = torch.backends.cpu.get_cpu_capability()
    if record.config.get("cpu_capability") != capability:
        return f"the record was made with {record.config.get('cpu_capability')} CPU kernels, these are {capability}"
    return None


@pytest.mark.parametrize("name, task", [("harness-ce", None), ("harness-recall", SegmentationTask())],
                         ids=["ce-facade", "recall-segmentation-task"])
def test_reference_run_is_reproduced_exactly(tmp_path, name, task):
    committed = load_record(HERE / f"{name}--seed0.json")
    reason = _skip_reason(committed)
    if reason:
        pytest.skip(f"not comparable bit for bit: {reason}")
    kwargs = {} if task is None else {"task": task}
    result = make_records.run(name, results_dir=tmp_path, **kwargs)
    rerun = load_record(result.record_path)  # the same JSON round trip as the committed one
    assert rerun.history == committed.history
    drop = {"train_time_s"}
    assert {k: v for k, v in rerun.metrics.items() if k not in drop} == \
        {k: v for k, v in committed.metrics.items() if k not in drop}
    assert rerun.config["train"] == {**committed.config["train"], "plateau_metric": None,
                                     "plateau_window": 0.25, "plateau_tolerance": 0.01}
    if name == "harness-recall":  # the stateful loss's weights are in the history, and moved
        assert all("class_weights" in h for h in rerun.history)
        assert len({tuple(h["class_weights"]) for h in rerun.history}) == len(rerun.history)


def test_references_hold_what_the_test_compares():
    for name in make_records.RUNS:
        record = load_record(HERE / f"{name}--seed0.json")
        assert record.config["train"]["steps"] == 40 and record.config["train"]["device"] == "cpu"
        assert [h["step"] for h in record.history if "val_miou" in h] == [10, 20, 30, 40]
        assert {"val_miou", "test_miou", "test_confusion_matrix"} <= set(record.metrics)
        assert record.provenance["git_dirty"] is False
