"""The output stage (bench.outputs): what it writes after a finished, interrupted or failed run,
that `bench curves` writes the same from the stored records, and the import rules around it
(the runner imports neither the output stage nor the report; aggregation does not import BD)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bench
from bench.cli import main
from bench.manifest import read_manifest
from bench.outputs import rewrite_outputs, write_run_outputs
from bench.runner import plan_codec, run, stopped_run

PACKAGE = Path(bench.__file__).parent
RATES = {"jpeg": [25, 75], "webp": [40, 80]}
DERIVED = ["aggregates.csv", "bd.csv", "plots/rd_psnr.svg", "plots/rd_ms_ssim.svg"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three small smooth images (a codec's R-D curve on them rises as on photographs)."""
    root = tmp_path_factory.mktemp("outputs") / "images"
    root.mkdir()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:192, 0:256].astype(np.float64)
    for i in range(3):
        base = 128 + 60 * np.sin(x / (9 + 3 * i)) * np.cos(y / (7 + i))
        pixels = base[..., None] + rng.normal(0, 6, (192, 256, 3)) + [0, 20 * i, -15]
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"im{i}.png")
    return root


def _stable(path: Path) -> bytes:
    """A file's bytes, with the random ids matplotlib gives an SVG's markers and clip paths
    (a new set at every save) replaced by one name."""
    return re.sub(rb"\b[mp][0-9a-f]{10}\b", b"ID", path.read_bytes())


def _run(images: Path, out: Path, **kwargs):
    return bench.run(
        list(RATES), "folder", dataset_options={"data_dir": str(images)}, rates=RATES, out=out,
        workers=0, **kwargs,
    )  # fmt: skip


# --- after a run -------------------------------------------------------------------------------


def test_the_api_writes_every_output_and_bench_curves_rewrites_them_the_same(images, tmp_path):
    result = _run(images, tmp_path / "run")
    directory = result.directory
    assert [p.name for p in result.plots] == [
        "rd_psnr.png", "rd_psnr.svg", "rd_ms_ssim.png", "rd_ms_ssim.svg"
    ]  # fmt: skip
    assert result.aggregates_csv == directory / "aggregates.csv"
    assert (directory / "report.html").is_file()
    written = {name: _stable(directory / name) for name in DERIVED}
    for name in DERIVED:
        (directory / name).unlink()
    rows, plots = rewrite_outputs(directory)
    assert len(rows) == 4 and [p.name for p in plots] == [p.name for p in result.plots]
    assert {name: _stable(directory / name) for name in DERIVED} == written


def test_the_runner_alone_writes_records_and_manifest_only(images, tmp_path):
    result = run(
        bench.datasets.open_dataset("folder", {"data_dir": str(images)}),
        [plan_codec("jpeg", rates=[50])],
        tmp_path / "run",
        workers=0,
    )
    assert sorted(p.name for p in result.directory.iterdir() if not p.name.startswith(".")) == [
        "manifest.json", "records.csv", "records.parquet"
    ]  # fmt: skip
    assert result.plots == [] and result.dataset_tag and [m.name for m in result.metrics] == [
        "psnr", "ssim", "ms-ssim"
    ]  # fmt: skip
    done = write_run_outputs(result)
    assert [p.name for p in done.plots] == [
        "rd_psnr.png", "rd_psnr.svg", "rd_ms_ssim.png", "rd_ms_ssim.svg"
    ]  # fmt: skip
    assert (result.directory / "aggregates.csv").is_file()
    assert (result.directory / "report.html").is_file()
    assert not (result.directory / "bd.csv").exists()  # one codec: nothing to compare


class Stop(Exception):
    """A failure in the middle of a sweep (stands in for a full disk)."""


@pytest.mark.parametrize(
    ("raised", "status"), [(KeyboardInterrupt, "interrupted"), (Stop, "failed")]
)
def test_a_stopped_run_still_gets_its_outputs_from_the_records_it_kept(
    images, tmp_path, raised, status
):
    calls = []

    def progress(done: int, total: int, records: list) -> None:
        calls.append(done)
        if done == 2:
            raise raised()

    out = tmp_path / "run"
    with pytest.raises(raised) as caught:
        _run(images, out, progress=progress)
    stopped = stopped_run(caught.value)
    assert stopped is not None and stopped.status == status
    assert read_manifest(out).status == status
    kept = json.loads((out / "manifest.json").read_text())["records"]["ok"]
    assert kept == len(stopped.records) and 0 < kept < 3 * 4
    with (out / "aggregates.csv").open() as handle:
        assert sum(int(line.split(",")[4]) for line in list(handle)[1:]) == kept  # n_images
    assert (out / "plots" / "rd_psnr.svg").is_file()
    report = (out / "report.html").read_text()
    assert "Skipped (--no-crops)" in report  # as before: no crops of an unfinished run
    resumed = _run(images, out, resume=True)
    assert resumed.status == "finished" and len(resumed.records) == 3 * 4


def test_bench_run_interrupted_exits_130_with_its_outputs(images, tmp_path, monkeypatch, capsys):
    from bench import runner

    def interrupt(count: int, total: int, records: list) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bench.cli.ProgressBar.__call__", lambda self, *a: interrupt(*a))
    out = tmp_path / "run"
    argv = ["run", "--codecs", "jpeg", "--rates", "jpeg=30,70", "--dataset", "folder",
            "--data-dir", str(images), "--workers", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 130
    assert "interrupted: finished records are in" in capsys.readouterr().err
    assert read_manifest(out).status == "interrupted"
    assert (out / "aggregates.csv").is_file() and (out / "report.html").is_file()
    assert runner.stopped_run(KeyboardInterrupt()) is None


# --- imports -----------------------------------------------------------------------------------


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level: bool) -> set[str]:
    """The bench modules ``path`` imports: at module level only (outside TYPE_CHECKING) with
    ``top_level``, else anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    if top_level:
        nodes = [
            n
            for n in tree.body
            if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
        ]
        walked = [
            m
            for n in nodes
            if not isinstance(n, ast.FunctionDef | ast.ClassDef)
            for m in ast.walk(n)
        ]
    else:
        walked = list(ast.walk(tree))
    found = set()
    for node in walked:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            if node.module != "bench":  # `from bench import x` imports bench.x, not the API
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bench"))
    return found


def _graph(top_level: bool) -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path, top_level=top_level) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_the_runner_imports_neither_the_output_stage_nor_the_report():
    anywhere = _graph(top_level=False)
    assert not {
        m for m in anywhere["bench.runner"] if m.startswith(("bench.report", "bench.outputs"))
    }
    assert not {m for m in anywhere["bench.curves"] if m.startswith("bench.bjontegaard")}
    assert "bench.curves" in anywhere["bench.bjontegaard"]  # BD reads aggregates
    assert {"bench.curves", "bench.bjontegaard"} <= anywhere["bench.outputs"]


def test_aggregation_bd_and_the_output_stage_form_no_import_cycle():
    graph = _graph(top_level=False)
    for start in ("bench.curves", "bench.bjontegaard", "bench.outputs", "bench.runner"):
        seen, stack = set(), list(graph[start])
        while stack:
            module = stack.pop()
            assert module != start, f"{start} imports itself through {sorted(seen)}"
            if module not in seen:
                seen.add(module)
                stack.extend(graph.get(module, ()))
