"""The ``bench`` command: parse, call the library, print. The only place that exits."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import __version__
from bench.codecs import CODECS, default_rates
from bench.codecs.base import option_names
from bench.datasets import DATASETS, open_dataset
from bench.errors import BenchError, UsageError
from bench.records import Record
from bench.search import MODES
from bench.types import OptionValue, parse_option_value

if TYPE_CHECKING:
    from bench.check import CheckResult, Finding
    from bench.executors import Executor
    from bench.metrics.base import Column
    from bench.runner import RunResult
    from bench.training import Trainer, TrainingResult

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED_RECORDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 143  # SIGTERM: stopped like Ctrl-C, records kept, resumable


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that a run stops the same way."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


EXIT_REGRESSION = 4  # `bench check`: a rule failed (bad input to it is EXIT_USAGE)

log = logging.getLogger("bench")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--limit``, ``--batch-size``, ``--steps``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (``--workers``: 0 codes in-process)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise UsageError(f"{flag} expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def parse_rates(items: Sequence[str]) -> dict[str, list[float]]:
    """``["jpeg=5,10", "webp=50"]`` -> ``{"jpeg": [5.0, 10.0], "webp": [50.0]}``."""
    rates: dict[str, list[float]] = {}
    for item in items:
        codec, values = _split_assignment(item, "--rates")
        try:
            rates.setdefault(codec, []).extend(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"--rates {item!r}: rates must be numbers") from None
    return rates


def parse_targets(text: str) -> list[float]:
    """``"0.0625,0.125"`` -> ``[0.0625, 0.125]``; each must be a positive number."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--target-bpp {text!r}: expected numbers like 0.0625,0.125") from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise UsageError(f"--target-bpp {text!r}: expected positive bpp values")
    return values


def parse_codec_options(items: Sequence[str]) -> dict[str, dict[str, OptionValue]]:
    """``["bpg.chroma=444"]`` -> ``{"bpg": {"chroma": 444}}`` (values typed by their look)."""
    options: dict[str, dict[str, OptionValue]] = {}
    for item in items:
        key, value = _split_assignment(item, "--codec-option")
        codec, dot, option = key.partition(".")
        if not dot or not option:
            raise UsageError(f"--codec-option expects CODEC.OPTION=VALUE, got {item!r}")
        options.setdefault(codec, {})[option] = parse_option_value(value)
    return options


def dataset_options(args: argparse.Namespace) -> dict[str, object]:
    """Dataset constructor options from the command line: the flags given, then
    ``--dataset-option KEY=VALUE`` (values typed by their look)."""
    options: dict[str, object] = {
        key: value
        for key, value in (
            ("data_dir", args.data_dir),
            ("split", args.split),
            ("resolution", args.resolution),
            ("label_dir", args.label_dir),
            ("num_classes", args.num_classes),
        )
        if value is not None
    }
    if args.no_download:
        options["download"] = False
    for item in args.dataset_option:
        key, value = _split_assignment(item, "--dataset-option")
        options[key.replace("-", "_")] = parse_option_value(value)
    return options


def _fmt(value: float, digits: int = 3) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def parse_metrics(text: str) -> list[str]:
    """``"psnr,ms-ssim"`` -> ``["psnr", "ms-ssim"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def cmd_run(args: argparse.Namespace) -> int:
    from bench.api import run

    chosen_task, options = task_options(args)
    bar = ProgressBar()
    started: dict[str, Path] = {}

    def announce(tag: str, out_dir: Path) -> None:
        started["out"] = out_dir
        print(f"bench {__version__}: {args.codecs} on {tag} -> {out_dir}", file=sys.stderr)

    try:
        result = run(
            [c.strip() for c in args.codecs.split(",") if c.strip()],
            args.dataset,
            out=args.out,
            rates=parse_rates(args.rates),
            target_bpp=parse_targets(args.target_bpp) if args.target_bpp else None,
            target_mode=args.target_mode,
            codec_options=parse_codec_options(args.codec_option),
            dataset_options=dataset_options(args),
            metrics=parse_metrics(args.metrics),
            task=chosen_task,
            task_options=options,
            device=args.device,
            batch_size=args.batch_size,
            limit=args.limit,
            workers=args.workers,
            executor=executor_of(args),
            resume=args.resume,
            download=not args.no_download,
            progress=bar,
            on_start=announce,
            argv=args.argv,
            references=parse_references(args.reference),
            anchor=args.anchor,
        )
    except KeyboardInterrupt as exc:
        bar.close()
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        out_dir = started.get("out", args.out)
        print(
            f"\n{what}: finished records are in {out_dir}; continue with --resume --out {out_dir}",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    bar.close()
    print_summary(result)
    failed = sum(1 for r in result.records if not r.ok)
    if failed:
        print(
            f"\n{failed} record(s) failed; their errors are in records.csv (status=error)",
            file=sys.stderr,
        )
        return EXIT_FAILED_RECORDS if args.strict else EXIT_OK
    return EXIT_OK


def task_options(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    """The task (a ``TASKS`` name, or ``compression``) and its options from the command
    line: ``--task-option KEY=VALUE``, and for segmentation its own spelling
    (``--segmenter``, ``--segmenter-weights``, ``--segmenter-option``)."""
    from bench.tasks import NO_TASK, SEGMENTATION_TASKS
    from bench.tasks.segmentation import SegmentationTask

    task = args.task or NO_TASK
    options: dict[str, object] = {}
    if args.segmenter or args.segmenter_weights or args.segmenter_option:
        if task not in SEGMENTATION_TASKS:
            raise UsageError(
                f"--segmenter and its options need --task {' or '.join(SEGMENTATION_TASKS)}"
            )
        segmenter_options: dict[str, object] = {}
        for item in args.segmenter_option:
            key, value = _split_assignment(item, "--segmenter-option")
            segmenter_options[key.replace("-", "_")] = parse_option_value(value)
        options = SegmentationTask.legacy_options(
            args.segmenter, args.segmenter_weights, segmenter_options
        )
    for item in args.task_option:
        key, value = _split_assignment(item, "--task-option")
        options[key.replace("-", "_")] = parse_option_value(value)
    if options and task == NO_TASK:
        raise UsageError("--task-option needs --task NAME (see `bench list tasks`)")
    return task, options


class ProgressBar:
    """A tqdm bar over a run's jobs, with its ETA, on a terminal; failures are printed above
    it. Elsewhere (a CI log) one line per job, as a bar's redraws would only clutter it."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._failed = 0
        self._terminal = sys.stderr.isatty()

    def __call__(self, done: int, total: int, records: list[Record]) -> None:
        failed = [r for r in records if not r.ok]
        head = records[0] if records else None
        if not self._terminal:
            what = f"{head.image_id} {head.codec}" if head else ""
            status = f"{len(records) - len(failed)} ok" + (
                f", {len(failed)} failed: {failed[0].error}" if failed else ""
            )
            print(f"[{done:>4}/{total}] {what}: {status}", file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True)
        if failed:
            self._failed += len(failed)
            first = failed[0]
            self._bar.write(
                f"{first.image_id} {first.codec}: {len(failed)} failed: {first.error}",
                file=sys.stderr,
            )
            self._bar.set_postfix(failed=self._failed)
        if head is not None:
            self._bar.set_description(f"{head.codec} {head.image_id}"[:32])
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary_columns(result_dir: Path) -> list[Column]:
    """The columns the summary shows: each metric's and the task's aggregate columns that
    are not counts or per-class values, as the run's manifest names them."""
    from bench.manifest import read_manifest, rebuild_metrics, rebuild_task

    manifest = read_manifest(result_dir)
    columns = [c for m in rebuild_metrics(manifest) for c in m.aggregate_columns]
    task = rebuild_task(manifest)
    if task is not None:
        columns += task.known_columns()
    return [c for c in columns if not c.name.startswith("n_")]


def headline_of(run_dir: Path) -> str:
    """The report's headline (the best codec's mean BD-rate against the anchor), or ""."""
    from bench.report import load_run
    from bench.report.overview import summary_of

    try:
        found, _ = summary_of(load_run(run_dir))
    except Exception:  # the summary is a convenience; the run's files are what counts
        return ""
    return found.headline() if found is not None else ""


def print_summary(result: RunResult) -> None:
    """The aggregates as a table, and where every output is."""
    from bench.curves import read_aggregates

    rows = read_aggregates(result.aggregates_csv)
    columns = summary_columns(result.directory)
    headings = [c.heading.replace(" mean", "") for c in columns]
    widths = [max(7, len(h)) for h in headings]
    print(
        f"\n{'codec':<11} {'param':>8} {'rate':>7} {'bpp':>7} "
        + " ".join(f"{h:>{w}}" for h, w in zip(headings, widths, strict=True))
        + f" {'n':>4} {'fail':>4}"
    )
    for row in rows:
        cells = " ".join(
            f"{_fmt(c.scale * row.get(c.name), c.digits):>{w}}"
            for c, w in zip(columns, widths, strict=True)
        )
        print(
            f"{row.codec:<11} {row.rate_param:>8} {row.rate:>7g} {_fmt(row.bpp_mean):>7} "
            f"{cells} {row.n_images:>4} {row.n_failed:>4}"
        )
    headline = headline_of(result.directory)
    if headline:
        print(f"\n{headline}")
    print(f"\nresults in {result.directory}/")
    print("  records.csv, records.parquet   one row per image x codec x rate point")
    print("  aggregates.csv                 one row per codec x rate point")
    if (result.directory / "bd.csv").is_file():
        print("  bd.csv                         BD-rate of every codec pair, per BD metric")
    if (result.directory / "per_class_iou.csv").is_file():
        print("  per_class_iou.csv              IoU per class and codec x rate point")
    print(f"  plots/                         {', '.join(p.name for p in result.plots)}")
    print("  manifest.json                  command, versions, machine, git commit, times")
    if (result.directory / "report.html").is_file():
        print("  report.html                    everything above in one page (opens offline)")


def executor_of(args: argparse.Namespace) -> Executor | None:
    """The executor ``--executor`` names (None: the local pool of ``--workers``)."""
    if args.executor == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(args.ray_address, num_cpus=args.workers or None)
    if args.ray_address:
        raise UsageError("--ray-address needs --executor ray")
    return None


def cmd_list(args: argparse.Namespace) -> int:
    listers = {
        "codecs": lambda: list_codecs(args.verbose),
        "datasets": list_datasets,
        "segmenters": list_segmenters,
        "metrics": list_metrics,
        "tasks": list_tasks,
    }
    return listers[args.what]()


def list_metrics() -> int:
    from bench.metrics import DEFAULT_METRICS, METRICS

    print(f"{'metric':<12} {'default':<7} {'columns (aggregates)':<52} description")
    for name in METRICS.names():
        try:
            cls = METRICS.load(name)
        except Exception as exc:  # a broken plugin is listed, not fatal
            print(f"{name:<12} {'-':<7} cannot load: {exc}")
            continue
        columns = ", ".join(c.name for c in cls.aggregate_columns)
        default = "yes" if name in DEFAULT_METRICS else "no"
        print(f"{name:<12} {default:<7} {columns:<52} {cls.description}")
    return EXIT_OK


def list_tasks() -> int:
    from bench.tasks import TASKS

    print(f"{'task':<14} {'labels':<6} columns (aggregates)")
    for name in TASKS.names():
        try:
            cls = TASKS.load(name)
        except Exception as exc:  # a broken plugin is listed, not fatal
            print(f"{name:<14} {'-':<6} cannot load: {exc}")
            continue
        columns = ", ".join(c.name for c in cls.known_columns())
        source = TASKS.entry(name).source
        about = cls.description + ("" if source == "built-in" else f"  ({source})")
        print(f"{name:<14} {'yes' if cls.needs_labels else 'no':<6} {columns}")
        if about:
            print(f"{'':<14} {'':<6} {about}")
    return EXIT_OK


def list_codecs(verbose: bool) -> int:
    width = max(len(n) for n in [*CODECS.names(), "codec"])
    print(f"{'codec':<{width}} {'usable':<6} {'rate parameter':<34} {'default sweep / details'}")
    for name in CODECS.names():
        entry = CODECS.entry(name)
        try:
            cls = CODECS.load(name)
            codec = cls()
            availability = cls.installed()
        except Exception as exc:  # a broken plugin is listed, not fatal
            print(f"{name:<{width}} {'no':<6} {'-':<34} cannot load: {exc}. {entry.install_hint}")
            continue
        scale = codec.scale
        direction = "higher" if scale.quality_rises else "lower"
        param = f"{scale.name} {scale.low:g}..{scale.high:g} ({direction}=better)"
        if availability.usable:
            try:
                sweep = ",".join(f"{r:g}" for r in default_rates(codec))
            except UsageError:  # no default sweep: its weights' rate points, or --rates
                sweep = "trained rates" if codec.weight_options else "--rates"
            detail = f"{sweep}  [{availability.detail}]"
        else:
            detail = f"{availability.detail}. To use: {availability.hint}"
        source = "" if entry.source == "built-in" else f" ({entry.source})"
        usable = "yes" if availability.usable else "no"
        print(f"{name:<{width}} {usable:<6} {param:<34} {detail}{source}")
        opts = option_names(cls)
        if opts and verbose:
            print(f"{'':<{width}} options: {', '.join(opts)}")
    return EXIT_OK


def list_segmenters() -> int:
    from bench.tasks import SEGMENTERS

    print(f"{'segmenter':<14} {'usable':<6} details")
    for name in SEGMENTERS.names():
        entry = SEGMENTERS.entry(name)
        try:
            cls = SEGMENTERS.load(name)
            availability = cls.availability()
        except Exception as exc:  # a broken plugin is listed, not fatal
            print(f"{name:<14} {'no':<6} cannot load: {exc}. {entry.install_hint}")
            continue
        detail = (
            f"{cls.description} [{availability.detail}]"
            if availability.usable
            else f"{availability.detail}. To use: {availability.hint}"
        )
        print(f"{name:<14} {'yes' if availability.usable else 'no':<6} {detail}")
    return EXIT_OK


def list_datasets() -> int:
    print(f"{'dataset':<28} {'available':<9} {'images':>6} {'labels':>6}  location / details")
    for name in DATASETS.names():
        try:
            cls = DATASETS.load(name)
            selections = [(open_dataset(name, options)) for options in cls.listed_selections()]
        except Exception as exc:  # a broken plugin is listed, not fatal
            print(f"{name:<28} {'no':<9} {'-':>6} {'-':>6}  cannot load: {exc}")
            continue
        for dataset in selections:
            status = dataset.status()
            extra = f"  ({status.detail})" if status.detail else ""
            print(
                f"{dataset.tag:<28} {'yes' if status.available else 'no':<9} {status.images:>6} "
                f"{status.labels:>6}  {status.location}{extra}"
            )
    return EXIT_OK


def parse_references(texts: Sequence[str]) -> list[str]:
    """``--reference kodak/vtm,bpg --reference my.json`` -> ``["kodak/vtm", "bpg", "my.json"]``."""
    return [name.strip() for text in texts for name in text.split(",") if name.strip()]


def store_report_choices(run_dir: Path, args: argparse.Namespace) -> None:
    """Keep ``--reference`` (replacing the run's stored curves) and ``--anchor`` in a run
    directory, checked against the run, before its plots or report are written."""
    from bench.api import check_anchor, resolve_references
    from bench.references import read_references, write_references
    from bench.report import load_run
    from bench.report.rundir import write_report_options

    run = load_run(run_dir)
    specs = parse_references(getattr(args, "reference", []))
    dataset = run.manifest.dataset.get("name") if run.manifest.dataset else None
    curves = resolve_references(specs, dataset) if specs else read_references(run_dir)
    anchor = check_anchor(getattr(args, "anchor", None), run.codecs, curves)
    if specs:
        write_references(curves, run_dir)
    if anchor is not None:
        write_report_options(run_dir, anchor=anchor)


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_comparison, write_report

    run_dirs = [Path(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else None
    if len(run_dirs) == 1:
        store_report_choices(run_dirs[0], args)
        if args.reference:
            from bench.outputs import rewrite_outputs

            rewrite_outputs(run_dirs[0])  # the plots and bd.csv with the new curves
        path = write_report(run_dirs[0], out, crops=not args.no_crops, crop_image=args.crop_image)
    else:
        if args.reference or args.anchor:
            raise UsageError("--reference and --anchor are for the report of one run")
        if args.crop_image:
            raise UsageError(
                "--crop-image is for the report of one run; a comparison of runs has no crops"
            )
        path = write_comparison(run_dirs, out)
    print(f"wrote {path}")
    return EXIT_OK


def cmd_curves(args: argparse.Namespace) -> int:
    from bench.outputs import rewrite_outputs

    directory = Path(args.run_dir)
    store_report_choices(directory, args)
    rewrite_outputs(directory)
    print(f"rewrote aggregates, records.parquet and plots/ in {directory}")
    return EXIT_OK


def parse_crop(text: str | None) -> tuple[int, int] | None:
    """``"256x512"`` -> ``(256, 512)`` (height x width); None or "" for whole images."""
    if not text:
        return None
    height, sep, width = text.lower().partition("x")
    try:
        crop = (int(height), int(width))
    except ValueError:
        crop = (0, 0)
    if not sep or min(crop) < 16 or crop[0] % 16 or crop[1] % 16:
        raise UsageError(f"--crop {text!r}: expected HEIGHTxWIDTH, multiples of 16, e.g. 256x512")
    return crop


def _add_training_options(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """The options every ``bench train NAME`` shares (a trainer sets their ``defaults``)."""
    data = p.add_argument_group("training data")
    data.add_argument("--dataset", default="folder", help="any dataset (default %(default)s)")
    data.add_argument("--data-dir", help="directory that holds the dataset")
    data.add_argument("--split", help="dataset split (cityscapes: train)")
    data.add_argument("--resolution", choices=["full", "half"], help="cityscapes: full or half")
    data.add_argument("--label-dir", help=argparse.SUPPRESS)
    data.add_argument("--num-classes", type=positive_int, help=argparse.SUPPRESS)
    data.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE")
    data.add_argument("--no-download", action="store_true", help="never download data")
    data.add_argument("--limit", type=positive_int, help="only the first N images")
    loop = p.add_argument_group("training loop")
    loop.add_argument("--steps", type=positive_int, help="training steps")
    loop.add_argument("--epochs", type=positive_int, help="passes over the images")
    loop.add_argument(
        "--batch-size", type=positive_int, default=1, help="images per step (%(default)s)"
    )
    loop.add_argument(
        "--crop", help="random crops HEIGHTxWIDTH (default %(default)s; None: whole images)"
    )
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (mixed precision)")
    loop.add_argument(
        "--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints"
    )
    loop.add_argument("--log-every", type=positive_int, default=50, help="steps per loss record")
    loop.add_argument("--resume", action="store_true", help="continue from --out")
    loop.add_argument("--out", required=True, help="the checkpoint file")
    loop.add_argument(
        "--init-from", metavar="CKPT",
        help="fine-tune: start from CKPT's weights (same model options) with fresh "
        "optimisers, step 0 and this command's recipe; recorded in the checkpoint",
    )  # fmt: skip
    p.set_defaults(**defaults)


class _ListTrainers(argparse.Action):
    """``bench train --help``: the usage, then what can be trained (names and descriptions)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.print_help()
        print(f"\n{_trainers_listing()}\n\n`bench train NAME --help` shows NAME's options.")
        parser.exit()


def _trainers_listing() -> str:
    from bench.training import TRAINERS

    lines = ["what can be trained:"]
    for name in TRAINERS.names():
        try:
            description = TRAINERS.load(name).description
        except Exception as exc:  # a missing optional dependency or a broken plugin is listed
            hint = TRAINERS.entry(name).install_hint
            description = f"(cannot load: {exc}" + (f"; {hint})" if hint else ")")
        lines.append(f"  {name:<12} {description}")
    return "\n".join(lines)


def _train(trainer: Trainer, resume: bool) -> TrainingResult | int:
    """Run ``trainer``; on Ctrl-C or SIGTERM, say what the checkpoint holds and return the
    exit status instead of a result.

    Nothing is saved at the interruption: it can fall between the optimisers' updates, and a
    checkpoint from there would not resume into the uninterrupted run. The last periodic
    checkpoint does.
    """
    try:
        return trainer.run(resume=resume)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        out, saved = trainer.options.out, trainer.saved_step
        kept = (
            f"{out} holds step {saved}; continue with the same command and --resume"
            if saved is not None
            else f"no checkpoint was written to {out} yet (see --checkpoint-every)"
        )
        print(f"\n{what} at step {trainer.step}: {kept}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _log_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    """``bench train NAME [options]``: the trainer registered as NAME, with the shared options
    and its own."""
    from bench.training import TRAINERS
    from bench.training.distributed import finish, from_env, init_from_env

    if not args.model:
        raise UsageError(
            "bench train NAME: name what to train (" + ", ".join(TRAINERS.names()) + "); "
            "`bench train --help` describes them"
        )
    entry = TRAINERS.entry(args.model)
    try:
        kind = TRAINERS.load(args.model)
    except ImportError as exc:
        hint = f"; {entry.install_hint}" if entry.install_hint else ""
        raise UsageError(
            f"bench train {args.model}: cannot import {entry.target} ({exc}){hint}"
        ) from exc
    parser = argparse.ArgumentParser(
        prog=f"bench train {kind.name}", description=kind.details or kind.description
    )
    _add_training_options(parser, dict(kind.defaults))
    kind.add_arguments(parser)
    options = parser.parse_args(args.options)
    job = kind.from_args(options)
    dataset = open_dataset(
        options.dataset, job.dataset_options(options.dataset, dataset_options(options))
    )
    # Launched by torchrun: join its process group (rank r on cuda:r with NCCL, gloo on a CPU).
    world, device = init_from_env(options.device) if from_env() else (None, options.device)
    try:
        return _train_command(job, dataset, options, device, world)
    finally:
        finish()


def _train_command(
    job: Any, dataset: Any, options: argparse.Namespace, device: str, world: Any
) -> int:
    """``bench train`` after parsing: one process, or one rank of torchrun's (``world``)."""
    from bench.training import Trainer, TrainingOptions, seed_everything
    from bench.training.out import check_no_overwrite, check_out_path, out_lock

    main = world is None or world.main
    training = TrainingOptions(
        steps=options.steps,
        epochs=job.epochs(options.steps, options.epochs),
        batch_size=options.batch_size,
        crop=parse_crop(options.crop),
        seed=options.seed,
        device=device,
        checkpoint_every=options.checkpoint_every,
        log_every=options.log_every,
        out=Path(options.out),
        init_from=options.init_from,
    )
    out = Path(options.out)
    check_out_path(out)  # before a step is trained, as bench run checks its --out
    # One writer per checkpoint, for the whole command: rank 0 of a data-parallel run.
    with out_lock(out) if main else contextlib.nullcontext():
        done = job.run_instead(dataset, training, options.limit, _log_line)
        if done is not None:
            if main:
                print(done)
            return EXIT_OK
        check_no_overwrite(out, options.resume)
        job.check(training)
        sampler = job.sampler(dataset, training, options.limit, _log_line)
        if world is not None and world.size > 1:
            sampler.shard(world.rank, world.size)  # before build: schedules count its steps
        seed_everything(training.seed)  # before build: the initial weights repeat too
        trainable = job.build(training, sampler)
        if main:
            print(job.banner(trainable, sampler, training), file=sys.stderr)
        result = _train(Trainer(trainable, sampler, training), options.resume)
        if isinstance(result, int):
            return result
        if main:
            print(job.finish(trainable, result, sampler, _log_line))
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace) -> int:
    from bench.check import snapshot_run, write_baseline

    snapshot = snapshot_run(Path(args.run_dir))
    write_baseline(snapshot, Path(args.out))
    hashes = sum(len(p.hashes) for p in snapshot.points.values())
    print(
        f"wrote {args.out}: {len(snapshot.points)} rate points x {len(snapshot.images)} images "
        f"of {snapshot.dataset}, {hashes} bitstream hashes"
    )
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """``bench import compressai|csv FILE...``: published curves into the imported references."""
    from bench.references.library import import_files, quality_columns

    done = import_files(
        args.form,
        [Path(f) for f in args.files],
        dataset=args.dataset,
        name=args.name,
        source=args.source,
        licence=args.licence,
        to=Path(args.to) if args.to else None,
        force=args.force,
    )
    for item in done:
        c = item.curve
        print(
            f"imported {c.name} ({c.dataset}, {c.points} points: "
            f"{', '.join(quality_columns(c)) or 'bpp only'}) -> {item.path}"
            f"  [--reference {item.key}]"
        )
        for warning in item.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_references(args: argparse.Namespace) -> int:
    """``bench references``: the shipped and imported reference curves."""
    from bench.references.library import list_references

    print(f"{'reference':<40} {'where':<8} {'dataset':<18} {'points':>6}  name, metrics, source")
    for item in list_references():
        if item.curve is None:
            print(f"{item.key:<40} {item.where:<8} cannot be read: {item.error}")
            continue
        c = item.curve
        where = f"{item.where}{' (hidden by an imported one)' if item.hidden else ''}"
        print(
            f"{item.key:<40} {where:<8} {c.dataset:<18} {c.points:>6}  {c.name}: "
            f"{', '.join(item.metrics)}"
        )
        print(f"{'':<40} source: {c.source}; licence: {c.licence or 'not stated'}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``bench export RUN_DIR --format F``: the run as CompressAI JSON, CSV, LaTeX or Markdown."""
    from bench.export import export_run

    done = export_run(
        Path(args.run_dir),
        args.format,
        anchor=args.anchor,
        out=args.out,
        with_references=args.with_references,
    )
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(done.text)
    for path in done.paths:
        print(f"wrote {path}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    import json

    from bench.check import compare, read_baseline, snapshot_run
    from bench.rules import load_rules

    rules = load_rules(Path(args.rules) if args.rules else None, args.rule)
    baseline = read_baseline(Path(args.baseline))
    result = compare(baseline, snapshot_run(Path(args.run_dir)), rules)
    code = EXIT_OK if result.passed else EXIT_REGRESSION
    if args.format == "json":

        def number(value: float | str) -> float | str | None:
            return None if isinstance(value, float) and math.isnan(value) else value

        findings = [
            {**{k: number(v) for k, v in vars(f).items()}, "change": number(f.change)}
            for f in result.findings
        ]
        print(json.dumps({"exit_code": code, **vars(result), "findings": findings}, indent=2))
        return code
    print_check(result, args.baseline)
    return code


def print_check(result: CheckResult, baseline: str) -> None:
    """The findings as a table (codec, rate point, metric, values, rule, verdict), then notes
    and a one-line summary."""

    def text(value: float | str) -> str:
        return value if isinstance(value, str) else f"{value:.6g}"

    def change(f: Finding) -> str:
        relative = "" if math.isnan(f.relative) else f" ({f.relative:+.2%})"
        return "" if math.isnan(f.change) else f"{f.change:+.4g}{relative}"

    head = ("codec", "point", "metric", "baseline", "new", "change", "rule", "verdict")
    rows = [
        (f.codec, f.point, f.metric, text(f.baseline), text(f.new), change(f), f.rule, f.verdict)
        for f in result.findings
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    if rows:
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for finding, row in zip(result.findings, rows, strict=True):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if finding.detail:
            print(f"    {finding.detail}")
    for note in result.notes:
        print(f"note: {note}")
    counts = ", ".join(
        f"{result.count(v)} {name}"
        for v, name in (("FAIL", "regression(s)"), ("WARN", "warning(s)"), ("better", "improved"))
    )
    verdict = "pass" if result.passed else "FAIL"
    print(
        f"bench check: {verdict}: {counts}; {result.points} rate points x {result.images} images "
        f"against {baseline}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Rate-distortion evaluation of image codecs."
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="sweep codecs over a dataset and score every reconstruction")
    p.add_argument(
        "--codecs", required=True, help="comma-separated codec names, e.g. jpeg,webp,jpeg2000"
    )
    p.add_argument("--dataset", default="kodak", help="dataset name (default: kodak)")
    p.add_argument(
        "--rates",
        action="append",
        default=[],
        metavar="CODEC=V1,V2,...",
        help="rate points for one codec, in its own parameter (repeatable)",
    )
    p.add_argument(
        "--codec-option",
        action="append",
        default=[],
        metavar="CODEC.KEY=VALUE",
        help="a codec option, e.g. bpg.chroma=444 (repeatable)",
    )
    p.add_argument("--data-dir", help="directory that holds the dataset")
    p.add_argument("--split", help="dataset split, e.g. cityscapes val, clic professional-valid")
    p.add_argument(
        "--resolution", choices=["full", "half"], help="cityscapes: full or half (1024x512)"
    )
    p.add_argument("--label-dir", help="folder: a parallel directory of label maps")
    p.add_argument("--num-classes", type=positive_int, help="folder: number of label classes")
    p.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other dataset option (repeatable)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="never download data or model weights"
    )
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    p.add_argument(
        "--workers",
        type=non_negative_int,
        help="worker processes (default: CPU count; 0 = in-process)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where jobs run: local processes (default) or Ray tasks (the ray extra)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="--executor ray: the cluster (ray://HOST:10001, HOST:6379 or auto; "
        "default: a local Ray instance with --workers CPUs)",
    )
    p.add_argument(
        "--target-bpp",
        metavar="BPP,...",
        help="instead of rates: search each image's rate value for these bpp targets",
    )
    p.add_argument(
        "--target-mode",
        choices=MODES,
        default="nearest",
        help="target-bpp search: the closest bpp (default) or the highest not above the target",
    )
    p.add_argument("--out", help="run directory (default: results/DATASET-TIMESTAMP)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, or grow it: the records of codecs not in --codecs "
        "are kept",
    )
    add_reference_options(p)
    p.add_argument(
        "--task",
        metavar="TASK",
        help="also run a task on every reconstruction and score it: a name of `bench list "
        "tasks`, e.g. segmentation (default: compression, none)",
    )
    p.add_argument(
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the task, e.g. segmenter=espnetv2 (repeatable)",
    )
    p.add_argument(
        "--segmenter",
        help="--task segmentation: the segmentation model (see `bench list segmenters`)",
    )
    p.add_argument("--segmenter-weights", help="checkpoint of the segmentation model")
    p.add_argument(
        "--segmenter-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a segmenter option, e.g. p=2 (repeatable)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N for the segmenter and learned codecs (default cpu)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=4, help="images per batch of the task's model"
    )
    p.add_argument(
        "--metrics",
        default="psnr,ssim,ms-ssim",
        metavar="NAME,...",
        help="metrics to score (`bench list metrics`; default psnr,ssim,ms-ssim)",
    )
    p.add_argument(
        "--strict", action="store_true", help=f"exit {EXIT_FAILED_RECORDS} if any record failed"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list codecs, datasets, segmenters, metrics or tasks")
    p.add_argument("what", choices=["codecs", "datasets", "segmenters", "metrics", "tasks"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "train",
        help="train a learned codec's weights (`bench train --help` lists what can be trained)",
        usage="bench train NAME [options]",
        description="Trains a registered trainable (the bench.trainers registry, plugins "
        "included): the shared data and loop options, plus NAME's own (bench train NAME --help).",
        add_help=False,
    )
    p.add_argument(
        "-h", "--help", action=_ListTrainers, nargs=0, help="list what can be trained, and exit"
    )
    p.add_argument("model", nargs="?", metavar="NAME", help="what to train")
    p.add_argument("options", nargs=argparse.REMAINDER, help="NAME's options")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("curves", help="recompute aggregates, Parquet and plots of a run directory")
    p.add_argument("run_dir")
    add_reference_options(p, anchor=False)
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("baseline", help="freeze a run's aggregates and bitstream hashes as CSV")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="baseline file, e.g. results/baselines/NAME.csv")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("import", help="add published R-D curves (CompressAI JSON, CSV)")
    p.add_argument("form", choices=["compressai", "csv"])
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--dataset", help="the dataset of files that do not say (e.g. kodak)")
    p.add_argument("--name", help="the curve's name (one curve only)")
    p.add_argument("--source", default="", help="where the numbers come from (URL, paper)")
    p.add_argument("--licence", default="", help="the licence of the numbers")
    p.add_argument("--to", metavar="DIR", help="where to (default: $BENCH_REFERENCES)")
    p.add_argument("--force", action="store_true", help="replace an imported curve")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("references", help="list the shipped and imported reference curves")
    p.set_defaults(func=cmd_references)

    p = sub.add_parser("export", help="a run as CompressAI JSON, CSV, or LaTeX/Markdown tables")
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, choices=["compressai", "csv", "latex", "markdown"])
    p.add_argument("--anchor", metavar="CODEC", help="latex/markdown: BD anchor (first codec)")
    p.add_argument("--out", metavar="PATH", help="file or directory; - for stdout")
    p.add_argument("--with-references", action="store_true", help="also the run's published curves")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "check",
        help=f"compare a run with a baseline; exit {EXIT_REGRESSION} on a regression",
        description=f"Exit codes: {EXIT_OK} pass, {EXIT_REGRESSION} regression found, "
        f"{EXIT_USAGE} bad input (baseline of another dataset, images or rate points, a "
        "missing metric, a malformed baseline or rules file).",
    )
    p.add_argument("run_dir")
    p.add_argument("--baseline", required=True, help="baseline CSV written by `bench baseline`")
    p.add_argument("--rules", help="TOML rules file (see docs/ci.md)")
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="SPEC",
        help="a rule, e.g. psnr_rgb_mean:abs=0.05 or identical:codecs=jpeg+webp (repeatable)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "report",
        help="write the self-contained HTML report of a run directory, or a page comparing runs",
        description="With one RUN_DIR: its report (RUN_DIR/report.html). With several: one "
        "page with every run's R-D curves on the same axes, BD tables between the runs and "
        "each run's provenance (reports/A-vs-B.html in the project).",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out",
        help="report file (default: RUN_DIR/report.html; with several runs "
        "reports/RUN_A-vs-RUN_B.html, named after the run directories)",
    )
    p.add_argument(
        "--no-crops", action="store_true", help="no crops of reconstructions (codes nothing again)"
    )
    p.add_argument("--crop-image", metavar="ID", help="image id to crop (default: chosen)")
    add_reference_options(p)
    p.set_defaults(func=cmd_report)
    return parser


def add_reference_options(p: argparse.ArgumentParser, anchor: bool = True) -> None:
    p.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME_OR_FILE",
        help="published curves drawn dashed beside the run's and compared in BD tables: "
        "names such as kodak/vtm or bpg (`bench references` lists them), or CompressAI "
        "results JSON / CSV files; comma-separated or repeated; kept in the run directory",
    )
    if anchor:
        p.add_argument(
            "--anchor",
            metavar="CODEC",
            help="the codec (or published curve) every other is compared with on the "
            "report's first screen (default: the first codec)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    args.argv = ["bench", *argv]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the environment (a full disk, a lost mount): one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"bench: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def command() -> None:
    """The ``bench`` command: ``main``, then, where torch was loaded, an exit that skips the
    interpreter's teardown (about 1.8 s with torch and CompressAI, after every output is
    written): atexit handlers still run (logging's flush among them) and the standard streams
    are flushed first. With a non-daemon thread still running, the exit is the usual one,
    which waits for it."""
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if "torch" in sys.modules and all(t.daemon for t in others):
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    command()
