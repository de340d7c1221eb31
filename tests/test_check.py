"""bench baseline / bench check: the regression gate, on real Kodak sweeps."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from bench.check import compare, read_baseline, snapshot_run, write_baseline
from bench.cli import (
    EXIT_ERROR,
    EXIT_FAILED_RECORDS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    main,
)
from bench.errors import UsageError
from bench.rules import DEFAULT_RULES, Rule, load_rules, parse_rule_option, rules_for

RATES = ["--rates", "jpeg=20,50,80", "--rates", "webp=20,50,80", "--rates", "jpeg2000=96,48,24"]


def sweep(kodak: Path, out: Path, *extra: str) -> Path:
    argv = ["run", "--codecs", "jpeg,webp,jpeg2000", *RATES, "--data-dir", str(kodak)]
    assert main([*argv, "--limit", "2", "--workers", "0", "--out", str(out), *extra]) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def run(kodak, tmp_path_factory) -> Path:
    """One real sweep: 2 Kodak images, jpeg, webp and jpeg2000 at 3 rate points each."""
    return sweep(kodak, tmp_path_factory.mktemp("check") / "run")


@pytest.fixture(scope="module")
def baseline(run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baselines") / "kodak.csv"
    assert main(["baseline", str(run), "--out", str(path)]) == EXIT_OK
    return path


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def edit_csv(path: Path, match: dict[str, str], **changes: object) -> int:
    """Set columns of the rows of a CSV that match (adding columns it lacks); returns how many
    rows matched."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns, rows = list(reader.fieldnames or []), list(reader)
    columns += [c for c in changes if c not in columns]
    hits = [row for row in rows if all(row[k] == v for k, v in match.items())]
    for row in hits:
        for column, change in changes.items():
            row[column] = repr(change(float(row[column]))) if callable(change) else str(change)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return len(hits)


def edit_aggregate(run_dir: Path, codec: str, rate: str | None, **changes: object) -> None:
    match = {"codec": codec} if rate is None else {"codec": codec, "rate": rate}
    assert edit_csv(run_dir / "aggregates.csv", match, **changes) > 0


def check(capsys, run_dir: Path, baseline: Path, *options: str) -> tuple[int, str]:
    code = main(["check", str(run_dir), "--baseline", str(baseline), *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def lines_with(output: str, *words: str) -> list[str]:
    return [line for line in output.splitlines() if all(w in line.split() for w in words)]


# --- the baseline file ------------------------------------------------------------------------


def test_baseline_holds_the_aggregates_exactly_and_the_bitstream_hashes(run, baseline):
    with (run / "aggregates.csv").open(newline="") as handle:
        aggregates = list(csv.DictReader(handle))
    with (run / "records.csv").open(newline="") as handle:
        records = list(csv.DictReader(handle))
    saved = read_baseline(baseline)
    assert saved.dataset == "kodak" and saved.images == ["kodim01", "kodim02"]
    assert len(saved.points) == len(aggregates) == 9
    for row in aggregates:
        point = next(
            p
            for k, p in saved.points.items()
            if (k.codec, k.rate_param, k.rate)
            == (row["codec"], row["rate_param"], float(row["rate"]))
        )
        for column in ("bpp_mean", "psnr_rgb_mean", "ms_ssim_db_mean", "encode_s_mean"):
            assert point.value(column) == float(row[column])  # full precision, exactly
        mine = sorted(
            (r["image_id"], r["sha256"])
            for r in records
            if r["codec"] == row["codec"] and float(r["rate"]) == float(row["rate"])
        )
        assert sorted(point.hashes.items()) == mine and len(mine) == 2
        lines = "".join(f"{image}:{sha}\n" for image, sha in mine)
        assert point.digest == hashlib.sha256(lines.encode()).hexdigest()
    assert baseline.read_text().startswith('# bench-baseline 1\n# dataset: "kodak"\n')


def test_baseline_round_trip_compares_equal(run, baseline, tmp_path):
    again = tmp_path / "again.csv"
    write_baseline(read_baseline(baseline), again)
    assert again.read_text() == baseline.read_text()
    result = compare(read_baseline(baseline), snapshot_run(run), load_rules(None, ["identical"]))
    assert result.findings == [] and result.notes == [] and result.passed


# --- pass, regression, improvement ------------------------------------------------------------


def test_identical_run_passes(capsys, run, baseline):
    code, out = check(capsys, run, baseline, "--rule", "identical")
    assert code == EXIT_OK
    assert "bench check: pass: 0 regression(s), 0 warning(s), 0 improved" in out
    assert "9 rate points x 2 images" in out


def test_a_second_real_run_is_bit_identical_and_passes(capsys, kodak, baseline, tmp_path):
    again = sweep(kodak, tmp_path / "again")
    code, out = check(capsys, again, baseline, "--rule", "identical")
    assert code == EXIT_OK, out
    assert not lines_with(out, "FAIL")


def test_psnr_worse_than_tolerance_fails_naming_the_metric(capsys, run, baseline, tmp_path):
    worse = copy_run(run, tmp_path)
    edit_aggregate(worse, "jpeg", "50.0", psnr_rgb_mean=lambda v: v - 0.02)
    code, out = check(capsys, worse, baseline)
    assert code == EXIT_REGRESSION
    failing = lines_with(out, "jpeg", "quality=50", "psnr_rgb_mean", "FAIL")
    assert len(failing) == 1 and "-0.02" in failing[0] and "abs 0.01" in failing[0]
    assert "bench check: FAIL: 1 regression(s)" in out


def test_a_drop_within_tolerance_passes(capsys, run, baseline, tmp_path):
    slightly = copy_run(run, tmp_path)
    edit_aggregate(slightly, "jpeg", "50.0", psnr_rgb_mean=lambda v: v - 0.005)
    code, out = check(capsys, slightly, baseline)
    assert code == EXIT_OK
    assert len(lines_with(out, "jpeg", "psnr_rgb_mean", "ok")) == 1


def test_more_bits_at_the_same_rate_point_fail_fewer_pass(capsys, run, baseline, tmp_path):
    more = copy_run(run, tmp_path)
    edit_aggregate(more, "webp", "80.0", bpp_mean=lambda v: v * 1.01)
    code, out = check(capsys, more, baseline)
    assert code == EXIT_REGRESSION
    assert lines_with(out, "webp", "quality=80", "bpp_mean", "FAIL")
    fewer = tmp_path / "fewer"
    shutil.copytree(run, fewer)
    edit_aggregate(fewer, "webp", "80.0", bpp_mean=lambda v: v * 0.99)
    code, out = check(capsys, fewer, baseline)
    assert code == EXIT_OK
    assert lines_with(out, "webp", "quality=80", "bpp_mean", "better")


def test_improvement_passes(capsys, run, baseline, tmp_path):
    better = copy_run(run, tmp_path)
    edit_aggregate(better, "jpeg", None, psnr_rgb_mean=lambda v: v + 0.5)
    code, out = check(capsys, better, baseline)
    assert code == EXIT_OK
    assert len(lines_with(out, "jpeg", "psnr_rgb_mean", "better")) == 3
    assert lines_with(out, "jpeg", "BD-rate", "better")


def test_bd_rate_drift_of_a_codec_against_its_own_curve(capsys, run, baseline, tmp_path):
    # 1 % more bits at every point of a curve is a BD-rate of exactly +1 %.
    shifted = copy_run(run, tmp_path)
    edit_aggregate(shifted, "webp", None, bpp_mean=lambda v: v * 1.01)
    rules = [Rule("bd_rate", "psnr_rgb_mean", limit=0.5)]
    result = compare(read_baseline(baseline), snapshot_run(shifted), rules)
    (finding,) = result.findings
    assert (finding.codec, finding.verdict) == ("webp", "FAIL")
    assert finding.new == pytest.approx(1.0, abs=1e-9)
    loose = [Rule("bd_rate", "psnr_rgb_mean", limit=1.5)]
    assert compare(read_baseline(baseline), snapshot_run(shifted), loose).passed
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('defaults = false\n[[rule]]\nkind = "bd_rate"\nmax = 0.5\n')
    code, out = check(capsys, shifted, baseline, "--rules", str(rules_file))
    assert code == EXIT_REGRESSION
    (bd_line,) = lines_with(out, "BD-rate")  # jpeg and jpeg2000 did not move
    assert lines_with(bd_line, "webp", "0", "1", "+1", "FAIL")  # baseline 0, new 1, change +1


def test_new_failed_records_are_a_regression(capsys, run, baseline, tmp_path):
    broken = copy_run(run, tmp_path)
    match = {"codec": "jpeg2000", "rate": "48.0", "image_id": "kodim02"}
    assert edit_csv(broken / "records.csv", match, status="error", sha256="", error="boom") == 1
    assert main(["curves", str(broken)]) == EXIT_OK  # aggregates from the edited records
    code, out = check(capsys, broken, baseline)
    assert code == EXIT_REGRESSION
    assert lines_with(out, "jpeg2000", "cratio=48", "n_failed", "FAIL")
    assert "failed now: kodim02" in out


# --- bitstream identity -----------------------------------------------------------------------


def test_changed_bitstream_fails_only_when_identity_is_required(capsys, kodak, baseline, tmp_path):
    # optimize=true changes only the Huffman tables: same pixels, fewer bytes, other hashes.
    optimized = sweep(kodak, tmp_path / "optimized", "--codec-option", "jpeg.optimize=true")
    code, out = check(capsys, optimized, baseline)
    assert code == EXIT_OK, out
    assert len(lines_with(out, "jpeg", "bpp_mean", "better")) == 3
    assert not lines_with(out, "jpeg", "psnr_rgb_mean")  # identical pixels
    assert "bitstreams differ from the baseline's at 3 rate point(s)" in out
    assert "jpeg options differ" in out
    code, out = check(capsys, optimized, baseline, "--rule", "identical:codecs=webp+jpeg2000")
    assert code == EXIT_OK
    code, out = check(capsys, optimized, baseline, "--rule", "identical")
    assert code == EXIT_REGRESSION
    assert len(lines_with(out, "jpeg", "bitstream", "FAIL")) == 3
    assert "2 of 2 images changed: kodim01, kodim02" in out


def test_one_changed_image_is_named(run, baseline, tmp_path):
    changed = copy_run(run, tmp_path)
    match = {"codec": "webp", "rate": "20.0", "image_id": "kodim02"}
    assert edit_csv(changed / "records.csv", match, sha256="0" * 64) == 1
    rules = [Rule("identical", "bitstream")]
    (finding,) = compare(read_baseline(baseline), snapshot_run(changed), rules).findings
    assert (finding.codec, finding.point, finding.verdict) == ("webp", "quality=20", "FAIL")
    assert finding.detail == "1 of 2 images changed: kodim02"


# --- rules ------------------------------------------------------------------------------------


def test_a_later_rule_replaces_a_default_for_the_codecs_it_names(capsys, run, baseline, tmp_path):
    worse = copy_run(run, tmp_path)
    edit_aggregate(worse, "jpeg", "50.0", psnr_rgb_mean=lambda v: v - 0.02)
    edit_aggregate(worse, "webp", "50.0", psnr_rgb_mean=lambda v: v - 0.02)
    code, out = check(capsys, worse, baseline, "--rule", "psnr_rgb_mean:abs=0.05,codecs=jp*")
    assert code == EXIT_REGRESSION
    assert lines_with(out, "jpeg", "psnr_rgb_mean", "ok")
    assert lines_with(out, "webp", "psnr_rgb_mean", "FAIL")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        "[[rule]]\nkind = 'tolerance'\nmetric = 'psnr_rgb_mean'\nabs = 0.05\n"
        "codecs = ['jpeg', 'webp']\n"
    )
    assert check(capsys, worse, baseline, "--rules", str(rules_file))[0] == EXIT_OK


def test_timings_warn_on_the_same_machine_and_fail_only_when_asked(capsys, run, baseline, tmp_path):
    slow = copy_run(run, tmp_path)
    edit_aggregate(slow, "jpeg", "50.0", encode_s_mean=lambda v: 3 * v + 0.01)
    code, out = check(capsys, slow, baseline)
    assert code == EXIT_OK
    assert lines_with(out, "jpeg", "encode_s_mean", "WARN")
    code, out = check(
        capsys, slow, baseline, "--rule", "timing:metric=encode_s_mean,rel=0.5,fail=true"
    )
    assert code == EXIT_REGRESSION
    assert lines_with(out, "jpeg", "encode_s_mean", "FAIL")
    elsewhere = tmp_path / "elsewhere.csv"
    text = baseline.read_text()
    elsewhere.write_text(text.replace('"hostname": "', '"hostname": "other-', 1))
    code, out = check(capsys, slow, elsewhere, "--rule", "timing:rel=0.5,fail=true")
    assert code == EXIT_OK
    assert "timings not compared" in out and not lines_with(out, "encode_s_mean")


def test_miou_drop_rule_in_points(run, tmp_path):
    with_miou = copy_run(run, tmp_path)
    edit_aggregate(with_miou, "jpeg", None, miou=0.6)
    base = snapshot_run(with_miou)
    edit_aggregate(with_miou, "jpeg", "20.0", miou=0.6 - 0.0015)
    edit_aggregate(with_miou, "jpeg", "80.0", miou=0.6 - 0.0005)
    rules = [Rule("miou_drop", "miou", limit=0.1)]
    findings = compare(base, snapshot_run(with_miou), rules).findings
    verdicts = {(f.point, f.metric): f.verdict for f in findings}
    assert verdicts == {("quality=20", "miou"): "FAIL", ("quality=80", "miou"): "ok"}


def test_rule_directions():
    psnr, bpp = (
        Rule("tolerance", "psnr_rgb_mean", abs_tol=0.01),
        Rule("tolerance", "bpp_mean", rel_tol=0.005),
    )
    assert [psnr.judge(30.0, v) for v in (29.98, 29.995, 30.02)] == ["FAIL", "ok", "better"]
    assert [bpp.judge(1.0, v) for v in (1.006, 1.004, 0.99)] == ["FAIL", "ok", "better"]
    assert psnr.judge(30.0, math.nan) == "FAIL" and psnr.judge(math.nan, 30.0) == "note"
    assert Rule("tolerance", "miou_drop", abs_tol=0.001).judge(0.01, 0.012) == "FAIL"
    both = Rule("tolerance", "bpp_mean", abs_tol=0.02, rel_tol=0.005)  # the larger allowance
    assert both.judge(1.0, 1.015) == "ok" and both.judge(10.0, 10.045) == "ok"
    assert both.judge(10.0, 10.06) == "FAIL"


def test_rule_option_syntax_and_precedence():
    (rule,) = parse_rule_option("ms_ssim_db_mean:rel=0.01,codecs=jpeg+webp,fail=false")
    assert (rule.kind, rule.metric, rule.rel_tol, rule.codecs, rule.fail) == (
        "tolerance",
        "ms_ssim_db_mean",
        0.01,
        ("jpeg", "webp"),
        False,
    )
    assert [r.metric for r in parse_rule_option("timing:rel=1")] == [
        "encode_s_mean",
        "decode_s_mean",
    ]
    assert parse_rule_option("identical")[0].codecs == ("*",)
    rules = [*DEFAULT_RULES, *parse_rule_option("psnr_rgb_mean:abs=1,codecs=bpg")]
    chosen = {r.slot: r for r in rules_for(rules, "bpg")}
    assert chosen[("tolerance", "psnr_rgb_mean")].abs_tol == 1.0
    assert {r.slot: r for r in rules_for(rules, "jpeg")}[
        ("tolerance", "psnr_rgb_mean")
    ].abs_tol == 0.01


# --- bad input: usage errors, not regressions -------------------------------------------------


def test_exit_codes_are_distinct():
    codes = [
        EXIT_OK,
        EXIT_ERROR,
        EXIT_USAGE,
        EXIT_FAILED_RECORDS,
        EXIT_REGRESSION,
        EXIT_INTERRUPTED,
    ]
    assert len(set(codes)) == len(codes)
    assert (EXIT_OK, EXIT_USAGE, EXIT_REGRESSION) == (0, 2, 4)


def edited_baseline(baseline: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = baseline.read_text()
    assert old in text
    path = tmp_path / "edited.csv"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('# dataset: "kodak"', '# dataset: "folder/photos"', "compare runs of the same dataset"),
        ('"kodim01", "kodim02"]', '"kodim01", "kodim03"]', "missing from the run: kodim03"),
        ("jpeg,quality,80.0,", "jpeg,quality,90.0,", "missing from the run: jpeg quality=90"),
        ("# bench-baseline 1", "dataset,codec", "is not a bench baseline"),
        ("# images: [", "# images: {[", "line 3: malformed header"),
        ("point,webp,quality,50.0,,", "point,webp,quality,fifty,,", "could not convert"),
    ],
)
def test_a_baseline_that_does_not_fit_is_a_usage_error(
    capsys, run, baseline, tmp_path, old, new, message
):
    other = edited_baseline(baseline, tmp_path, old, new)
    code, out = check(capsys, run, other)
    assert code == EXIT_USAGE
    assert message in out and "Traceback" not in out


def test_other_rate_points_are_listed(capsys, kodak, baseline, tmp_path):
    other = tmp_path / "other"
    argv = ["run", "--codecs", "jpeg,webp,jpeg2000", "--data-dir", str(kodak), "--limit", "2"]
    rates = ["--rates", "jpeg=20,50,85", "--rates", "webp=20,50,80", "--rates", "jpeg2000=96,48,24"]
    assert main([*argv, *rates, "--workers", "0", "--out", str(other)]) == EXIT_OK
    code, out = check(capsys, other, baseline)
    assert code == EXIT_USAGE
    assert "rate points of the baseline missing from the run: jpeg quality=80" in out
    assert "rate points of the run not in the baseline: jpeg quality=85" in out


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("miou:abs=0.01", "needs miou, which neither the baseline"),
        ("iou_road:abs=0.01", "needs iou_road"),
        ("psnr:abs=0.1", "did you mean 'psnr_rgb_mean'"),
        ("psnr_rgb_mean:abs", "expected KEY=VALUE"),
        ("psnr_rgb_mean", "needs abs or rel"),
        ("psnr_rgb_mean:abs=-1", "abs must be a finite number >= 0"),
        ("psnr_rgb_mean:tol=1", "has no key 'tol'"),
        ("bd_rate:metric=bpp_mean,max=1", "BD-rate needs a quality metric"),
        ("encode_s_mean:rel=1", 'use kind = "timing"'),
    ],
)
def test_a_bad_rule_option_is_a_usage_error(capsys, run, baseline, rule, message):
    code, out = check(capsys, run, baseline, "--rule", rule)
    assert code == EXIT_USAGE
    assert message in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]\nkind = 'tolerance'", "is not valid TOML"),
        ("[[rule]]\nkind = 'tolerence'\n", "did you mean 'tolerance'"),
        ("[[rule]]\nmetric = 'bpp_mean'\nrel = 0.1\n", "rule 1: missing 'kind'"),
        ("[[rule]]\nkind = 'identical'\ncodecs = 5\n", "codecs must be a codec name"),
        ("[[rule]]\nkind = 'tolerance'\nmetric = 'bpp_mean'\nrel = '1%'\n", "rel must be a number"),
        ("default = false\n", "unknown top-level key 'default'"),
        ("defaults = 'no'\n", "defaults must be true or false"),
    ],
)
def test_a_malformed_rules_file_is_a_usage_error(capsys, run, baseline, tmp_path, text, message):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(text)
    code, out = check(capsys, run, baseline, "--rules", str(rules_file))
    assert code == EXIT_USAGE
    assert str(rules_file) in out and message in out


def test_missing_files_are_usage_errors(capsys, run, baseline, tmp_path):
    code, out = check(capsys, run, tmp_path / "nope.csv")
    assert code == EXIT_USAGE and "cannot read the baseline" in out
    code, out = check(capsys, tmp_path, baseline)
    assert code == EXIT_USAGE and "is it a finished bench run directory?" in out
    code, out = check(capsys, run, baseline, "--rules", str(tmp_path / "nope.toml"))
    assert code == EXIT_USAGE and "cannot read the rules file" in out
    with pytest.raises(UsageError, match="did not finish"):
        unfinished = copy_run(run, tmp_path)
        manifest = json.loads((unfinished / "manifest.json").read_text())
        (unfinished / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
        snapshot_run(unfinished)


def test_json_output(capsys, run, baseline, tmp_path):
    worse = copy_run(run, tmp_path)
    edit_aggregate(worse, "jpeg2000", "24.0", ms_ssim_db_mean=lambda v: v - 0.1)
    code, out = check(capsys, worse, baseline, "--format", "json")
    report = json.loads(out)
    assert code == report["exit_code"] == EXIT_REGRESSION
    (failed,) = [f for f in report["findings"] if f["verdict"] == "FAIL"]
    assert (failed["codec"], failed["point"], failed["metric"]) == (
        "jpeg2000",
        "cratio=24",
        "ms_ssim_db_mean",
    )
    assert failed["change"] == pytest.approx(-0.1, abs=1e-9)
