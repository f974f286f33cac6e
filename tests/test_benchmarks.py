"""The benchmark's machinery on the tiny architecture: it runs and its table has every row. No timings asserted."""

import pytest

from benchmarks import run as bench


@pytest.mark.slow
def test_benchmark_table_has_expected_rows(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    rows, facts = bench.run("tiny", repeats=2, served_repeats=1, scan_slices=4, serve=False, log=lambda s: None)
    names = {(r.section, r.name.split(":")[0]) for r in rows}
    for expected in [("efficiency", "matmul peak fp32 (1024², best of 5)"), ("in process", "reference"),
                     ("in process", "ours"), ("in process", "ours pre/post"), ("model only", "exact fp32 eager, batch 1"),
                     ("model only", "chosen path, batch 1"), ("scan", "ours"), ("memory", "benchmark process (both models, the scan)"),
                     ("served", "reference served"), ("served", "cold start")]:
        assert expected in names, expected
    measured = [r for r in rows if r.value is not None]
    assert all(r.value > 0 for r in measured if r.unit in ("s", "s/slice", "slices/s", "GFLOP/s"))
    assert facts["nominal_gflop"] > facts["executed_gflop"] > 0  # the folded head does less work
    table = bench.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "skipped" in table
    assert "scan slices/s" in bench.targets(facts)


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    import json

    from benchmarks import gpu

    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("gpu-*.json")
    rows = {r["measurement"]: r["value"] for r in json.loads(result.read_text())["rows"]}
    assert any(k.startswith("training step, blog recipe") for k in rows)
    assert any(k.startswith("training step, project recipe") for k in rows)
    assert sum(k.startswith("tiny inference") for k in rows) == 3
    assert all(v > 0 for v in rows.values() if not isinstance(v, str))
