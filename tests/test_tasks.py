"""Tasks chosen through the registry: a task from a plugin package (``tests/toy_task.py``,
registered through the ``bench.tasks`` entry-point group) runs end to end like the built-in
segmentation: records, aggregates, its table, the report, ``bench baseline`` / ``bench
check`` and ``--resume``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plugins import install_plugin

import bench
from bench.cli import EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, main
from bench.curves import read_aggregates
from bench.errors import UsageError
from bench.manifest import SCHEMA_VERSION, RunManifest, read_manifest, rebuild_task
from bench.records import read_csv
from bench.rules import default_rules, parse_rule_option
from bench.tasks import TASKS


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The toy task installed as a plugin distribution's entry point."""
    install_plugin(
        monkeypatch, tmp_path / "site", {"bench.tasks": {"toy": "toy_task:ToyTask"}}, [TASKS]
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three 96x128 images with sharp-edged rectangles on smooth gradients."""
    root = tmp_path_factory.mktemp("toy-images")
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:128]
    for i in range(3):
        image = np.stack([x + 20 * i, y * 2, (x + y) // 2], axis=-1).astype(np.float64)
        for _ in range(4):
            top, left = rng.integers(0, 70), rng.integers(0, 100)
            image[top : top + 24, left : left + 28] = rng.integers(0, 256, 3)
        image += rng.normal(0, 3, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def toy_run(images: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "run", "--codecs", "jpeg", "--rates", "jpeg=20,80", "--dataset", "folder",
            "--data-dir", str(images), "--task", "toy", "--task-option", "threshold=24",
            "--workers", "1", "--out", str(out), *extra,
        ]
    )  # fmt: skip


def test_a_plugin_task_is_listed_with_its_columns(toy, capsys):
    assert main(["list", "tasks"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "segmentation" in out
    line = next(line for line in out.splitlines() if line.startswith("toy "))
    assert "edge_f1" in line and " no " in line  # needs no labels


def test_a_plugin_task_runs_end_to_end(toy, images, tmp_path, capsys):
    out = tmp_path / "run"
    assert toy_run(images, out) == EXIT_OK

    records = read_csv(out / "records.csv")
    assert {r.codec for r in records} == {"none", "jpeg"}  # the task's reference row is added
    assert len(records) == 3 * 3 and all(r.ok for r in records)
    assert {r.task for r in records} == {"toy:threshold=24"}
    for record in records:
        assert 0.0 <= record.edge_f1 <= 1.0 and str(record.edge_counts).count(":") == 2
    assert all(r.edge_f1 == 1.0 for r in records if r.codec == "none")

    rows = {(a.codec, a.rate): a for a in read_aggregates(out / "aggregates.csv")}
    low, high = rows[("jpeg", 20.0)].get("edge_f1"), rows[("jpeg", 80.0)].get("edge_f1")
    assert 0.0 < low < high < 1.0  # more bits, edges closer to the original's
    # Pooled over the set from the summed counts, not a mean of per-image F1.
    counts = [
        [int(v) for v in str(r.edge_counts).split(":")]
        for r in records
        if r.codec == "jpeg" and r.rate == 20.0
    ]
    both, extra, missed = np.sum(counts, axis=0)
    assert low == pytest.approx(2 * both / (2 * both + extra + missed))
    assert rows[("jpeg", 20.0)].get("edge_pixels") == both + missed

    table = list(csv.reader((out / "edge_agreement.csv").open()))
    assert table[0] == ["rate point", "edge F1"] and len(table) == 1 + 3
    assert (out / "plots" / "rd_edge_f1.svg").is_file()

    manifest = read_manifest(out)
    assert manifest.schema_version == SCHEMA_VERSION == 3
    assert manifest.task is not None and manifest.task.name == "toy"
    assert manifest.task.identity == "toy:threshold=24"
    assert manifest.task.provenance == {"options": {"threshold": 24.0}}
    rebuilt = rebuild_task(manifest)
    assert rebuilt is not None and rebuilt.identity == "toy:threshold=24"
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["task"]["name"] == "toy" and "segmenter" not in raw

    report = (out / "report.html").read_text()
    assert "Toy tables" in report and "Edge F1 per rate point" in report
    assert "edge counts summed over every image" in report
    assert "<h3>Task: toy</h3>" in report

    loaded = bench.load(out)
    assert "edge_f1" in loaded.aggregates.columns and "edge_f1" in loaded.records.columns

    # --resume with the same command codes nothing again.
    lines = (out / "records.csv").read_text().count("\n")
    assert toy_run(images, out, "--resume") == EXIT_OK
    assert (out / "records.csv").read_text().count("\n") == lines
    assert read_manifest(out).resumed

    # bench baseline + bench check: the run passes against itself ...
    baseline = tmp_path / "toy.csv"
    assert main(["baseline", str(out), "--out", str(baseline)]) == EXIT_OK
    assert '# task: {"identity": "toy:threshold=24", "name": "toy"}' in baseline.read_text()
    assert main(["check", str(out), "--baseline", str(baseline)]) == EXIT_OK
    # ... and fails when the baseline's edge F1 was higher than the run's by more than the
    # task's default tolerance (0.001: no rule is given), unless a rule allows that much.
    doctored = tmp_path / "doctored.csv"
    doctored.write_text(_raise_edge_f1(baseline.read_text(), by=0.01))
    capsys.readouterr()
    assert main(["check", str(out), "--baseline", str(doctored)]) == EXIT_REGRESSION
    failed = [line for line in capsys.readouterr().out.splitlines() if line.endswith("FAIL")]
    assert len(failed) == 1 and "edge_f1" in failed[0] and "abs 0.001" in failed[0]
    assert (
        main(["check", str(out), "--baseline", str(doctored), "--rule", "edge_f1:abs=0.05"])
        == EXIT_OK
    )
    # A drop rule is in the unit the column is shown in: edge F1 in %, so points.
    for allowed, code in ((0.5, EXIT_REGRESSION), (2, EXIT_OK)):
        rules = tmp_path / f"drop-{allowed}.toml"
        rules.write_text(
            f'defaults = false\n[[rule]]\nkind = "drop"\nmetric = "edge_f1"\nmax = {allowed}\n'
        )
        argv = ["check", str(out), "--baseline", str(doctored), "--rules", str(rules)]
        assert main(argv) == code
    assert "drop <= 0.5 pt" in capsys.readouterr().out


def _raise_edge_f1(text: str, by: float) -> str:
    """The baseline with the edge F1 of jpeg's point at rate 80 raised by ``by``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header = lines[start].split(",")
    column = header.index("edge_f1")
    for i in range(start + 1, len(lines)):
        cells = lines[i].split(",")
        if cells[:2] == ["point", "jpeg"] and float(cells[3]) == 80.0:
            cells[column] = repr(float(cells[column]) + by)
            lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n"


def test_the_api_takes_a_task_and_its_options(toy, images, tmp_path):
    result = bench.run(
        "jpeg", "folder", dataset_options={"data_dir": str(images)}, rates={"jpeg": [50]},
        task="toy", task_options={"threshold": 40}, out=tmp_path / "api", workers=0,
    )  # fmt: skip
    assert {r.task for r in result.records} == {"toy:threshold=40"}
    with pytest.raises(UsageError, match="unknown option colour; accepted: threshold"):
        bench.run(
            "jpeg", "folder", dataset_options={"data_dir": str(images)}, rates={"jpeg": [50]},
            task="toy", task_options={"colour": 1}, out=tmp_path / "bad", workers=0,
        )  # fmt: skip


def test_a_task_default_rule_and_its_column_are_known_to_rules(toy):
    rules = {(r.kind, r.metric): r for r in default_rules()}
    assert rules[("tolerance", "edge_f1")].abs_tol == 0.001
    assert not rules[("tolerance", "edge_f1")].required
    assert rules[("miou_drop", "miou")].limit == 0.1  # segmentation's, as before
    assert parse_rule_option("edge_f1:abs=0.01")[0].metric == "edge_f1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "toyy"], "unknown task 'toyy'. Did you mean 'toy'"),
        (["--task-option", "threshold=3"], "--task-option needs --task"),
        (["--task", "toy", "--segmenter", "espnet"], "--segmenter and its options need"),
        (["--task", "segmentation"], "needs a segmenter"),
    ],
)
def test_task_usage_errors(toy, images, tmp_path, capsys, argv, message):
    base = ["run", "--codecs", "jpeg", "--dataset", "folder", "--data-dir", str(images)]
    assert main([*base, "--out", str(tmp_path / "r"), *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_run_of_a_task_not_installed_here_says_so(tmp_path):
    manifest = RunManifest.from_dict(
        {"schema_version": 3, "task": {"name": "gone", "identity": "gone:1", "provenance": {}}}
    )
    assert manifest.task is not None and manifest.task_name == "gone"
    with pytest.raises(UsageError, match="unknown task 'gone'"):
        rebuild_task(manifest)


def test_baselines_written_with_a_segmenter_header_are_still_read(tmp_path):
    from bench.check import _baseline_task, read_baseline

    ci = Path(__file__).parents[1] / "results" / "baselines" / "kodak-ci.csv"
    assert "# task: null" in ci.read_text() and read_baseline(ci).task is None
    legacy = tmp_path / "legacy.csv"  # as bench wrote baselines before tasks existed
    legacy.write_text(ci.read_text().replace("# task: null", "# segmenter: null"))
    assert "# task" not in legacy.read_text() and read_baseline(legacy).task is None
    assert read_baseline(legacy).points == read_baseline(ci).points
    old = {"name": "espnetv2", "weights_sha256": "ab", "options": {}}
    assert _baseline_task({"segmenter": old}) == {"segmenter": old}
    assert _baseline_task({"task": {"name": "toy", "identity": "toy:1"}})["name"] == "toy"
