"""Side-by-side crops of reconstructions at matched bpp: one target bpp per row.

A run keeps no reconstructions, so they are made again. For each row's target bpp, a codec
whose rate can be searched (a classical codec: no weight files, any value of its rate scale,
no per-image inputs) is coded here at the rate value ``bench.search`` finds nearest the
target on this image, so its bpp really matches. Any other codec (a learned codec's
checkpoints) shows its record closest to the target, marked "not matched" when that is more
than ``MAX_DEVIATION`` off. A record is coded again with its codec, options and rate and shown
only when the new bitstream's SHA-256 equals the one the record measured; a reconstruction
coded here at the target has no record to compare with, and its caption says so. Anything
else (a codec not installed here, a different library version, a moved image file) is said,
never shown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.codecs.base import Codec, Image
from bench.curves import REFERENCE_CODEC
from bench.datasets import Dataset
from bench.errors import CodecUnavailable
from bench.metrics.fidelity import mse_rgb, psnr_from_mse
from bench.records import Record
from bench.report.markup import esc, fmt, note, rate_text, section
from bench.report.rundir import RunData
from bench.search import DEFAULT_TOLERANCE, MAX_PROBES, SearchResult, search_rate

CROP_SIZE = 256
TARGETS = 3
NOT_REPRODUCIBLE = "not reproducible on this machine"
MAX_DEVIATION = 0.25
"""A cell whose bpp is further than this (relative) from its row's target is marked "not
matched". Learned codecs' checkpoints are usually a factor of about 1.5 apart in bpp, so the
nearest one is within about 22 % of any target inside their range; 25 % more bits are worth
about 1 dB of PSNR, as much as separates codecs one compares by eye."""
CODED_HERE = "coded here at the target: no measured record, so no SHA-256 to compare"

CITYSCAPES_PALETTE = (  # trainId colours of the Cityscapes scripts (labels.py)
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


@dataclass
class Reproduction:
    """One record coded again: the reconstruction when the bitstream matched, else why not."""

    record: Record
    decoded: Image | None
    sha256: str
    reason: str = ""
    side_images: dict[str, Image] = field(default_factory=dict)
    """``Codec.side_images`` of the image at the record's rate (an importance map)."""

    @property
    def ok(self) -> bool:
        return self.decoded is not None


@dataclass
class Match:
    """One cell of the crops grid: a codec's reconstruction nearest a row's target bpp."""

    target: float
    reproduction: Reproduction
    rate: float
    bpp: float
    psnr: float
    searched: bool = False
    """Coded here at the target by the rate search (no measured record behind it)."""
    search_note: str = ""
    probes: int = 0
    """Bitstreams the rate search asked for (0: no search)."""

    @property
    def deviation(self) -> float:
        """Relative bpp difference from the target (-0.04 for 4 % below)."""
        return self.bpp / self.target - 1.0

    @property
    def matched(self) -> bool:
        return abs(self.deviation) <= MAX_DEVIATION

    @property
    def key(self) -> tuple[str, float]:
        """The codec and rate value: equal keys are the same reconstruction."""
        return self.reproduction.record.codec, self.rate


@dataclass(frozen=True)
class Window:
    """Where the crops are taken (the same place for every codec)."""

    x: int
    y: int
    width: int
    height: int

    def cut(self, image: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return image[self.y : self.y + self.height, self.x : self.x + self.width]


def detailed_window(image: Image, size: int = CROP_SIZE, stride: int = 32) -> Window:
    """The ``size`` x ``size`` window (on a ``stride`` grid) with the most luminance detail,
    measured as the sum of absolute horizontal and vertical differences."""
    height, width = image.shape[:2]
    w, h = min(size, width), min(size, height)
    luma = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    detail = np.zeros_like(luma)
    detail[:, 1:] += np.abs(np.diff(luma, axis=1))
    detail[1:, :] += np.abs(np.diff(luma, axis=0))
    integral = np.pad(detail.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, where = -1.0, (0, 0)
    for y in [*range(0, height - h + 1, stride), height - h]:
        for x in [*range(0, width - w + 1, stride), width - w]:
            total = (
                integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
            )
            if total > best:
                best, where = float(total), (x, y)
    return Window(where[0], where[1], w, h)


def bpp_targets(
    ranges: Sequence[tuple[float, float]], count: int = TARGETS
) -> tuple[list[float], bool]:
    """``count`` bpp values spread geometrically over the range every codec reaches, and
    whether such a common range exists (else over the union of the ranges)."""
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    shared = low <= high
    if not shared:
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if count == 1 or math.isclose(low, high):
        return [math.sqrt(low * high)], shared
    step = (high / low) ** (1 / (count - 1))
    return [low * step**i for i in range(count)], shared


def closest(records: Sequence[Record], target: float) -> Record:
    """The record whose bpp is nearest ``target`` on a log scale."""
    return min(records, key=lambda r: abs(math.log((r.bpp or target) / target)))


def searchable(codec: Codec) -> bool:
    """Whether the report codes ``codec`` at each target by a rate search: a classical codec
    (no weight files), free to take any value of its rate scale (no finite set of rate
    points) and without per-image inputs. A learned codec is not searched even where its scale
    is continuous: each probe would run its network on the whole image (and may load or fetch
    the weights of another rate point), up to ``MAX_PROBES`` times per target."""
    return not codec.weight_options and codec.rate_points() is None and not codec.inputs


def deviation_text(bpp: float, target: float) -> str:
    """``0.262 bpp (-4 %)``: a bpp and how far it is from the target, in whole percent.

    >>> deviation_text(0.262, 0.272), deviation_text(0.45, 0.3), deviation_text(0.3001, 0.3)
    ('0.262 bpp (-4 %)', '0.450 bpp (+50 %)', '0.300 bpp (0 %)')
    """
    percent = round(100 * (bpp / target - 1))
    return f"{bpp:.3f} bpp ({percent:+d} %)" if percent else f"{bpp:.3f} bpp (0 %)"


class _ProbesSpent(Exception):
    """The search asked for more probes than it may make."""


def search_target(
    codec: Codec, image: Image, target: float, coded: dict[float, bytes], budget: int = MAX_PROBES
) -> SearchResult:
    """The rate value of ``codec`` whose bitstream of ``image`` is nearest ``target`` bpp, by
    ``bench.search`` with at most ``budget`` probes (then the best probe so far). Bitstreams are
    kept in ``coded`` by rate value, so another target of the same codec reuses them."""
    pixels = image.shape[0] * image.shape[1]
    tried: dict[float, float] = {}

    def bpp_of(rate: float) -> float:
        if len(tried) >= budget:
            raise _ProbesSpent
        if rate not in coded:
            coded[rate] = codec.encode(image, rate)
        tried[rate] = 8.0 * len(coded[rate]) / pixels
        return tried[rate]

    try:
        return search_rate(
            bpp_of,
            codec.scale,
            target,
            tolerance=DEFAULT_TOLERANCE,
            first_guess=codec.rate_for_bpp(target),
        )
    except _ProbesSpent:
        rate, bpp = min(tried.items(), key=lambda item: abs(item[1] - target))
        return SearchResult(
            target, rate, bpp, tuple(tried.items()), f"stopped after {budget} probes"
        )


def load_original(run: RunData, image_id: str, shape: tuple[int, int]) -> tuple[Image | None, str]:
    """The image as the run coded it: through the run's dataset when it can be reopened
    (resizing, conversions), else the file itself; checked against the recorded size."""
    dataset = None
    try:
        dataset = _reopen_dataset(run)
    except Exception:  # the dataset may not reopen here; the file alone may still do
        dataset = None
    path_text = run.manifest.image_files.get(image_id)
    if not path_text and dataset is not None:  # a run from before manifests named the files
        try:
            path_text = next((str(r.path) for r in dataset.refs() if r.id == image_id), None)
        except Exception:
            path_text = None
    if not path_text:
        return None, f"neither the manifest nor the dataset here says which file {image_id} was"
    path = Path(path_text)
    if not path.is_file():
        return None, f"the image file {path} is not here"
    image = None
    if dataset is not None:
        from bench.datasets import SampleRef

        try:
            ref = SampleRef(dataset.tag, image_id, path)
            image = dataset.load(ref, with_label=False).image
        except Exception:
            image = None
    if image is None:
        from bench.images import read_rgb8

        try:
            image = read_rgb8(path).pixels
        except Exception as exc:
            return None, f"cannot read {path}: {exc}"
    if image.shape[:2] != shape:
        return None, (
            f"{path} reads as {image.shape[1]}x{image.shape[0]}, but the run coded "
            f"{shape[1]}x{shape[0]} pixels"
        )
    return image, ""


def _reopen_dataset(run: RunData) -> Dataset | None:
    """The run's dataset as the manifest describes it (location, split, resolution)."""
    from bench.manifest import rebuild_dataset

    return rebuild_dataset(run.manifest)


def _codec(run: RunData, record: Record, cache: dict[str, Codec | str]) -> Codec | str:
    """The record's codec built from its class and options, or why it cannot be."""
    key = f"{record.codec}\n{record.codec_options}"
    if key in cache:
        return cache[key]
    from bench.manifest import rebuild_codec

    made: Codec | str
    try:
        made = rebuild_codec(run.manifest, record.codec, record.codec_options or "{}")
    except CodecUnavailable as exc:
        made = str(exc)
    except Exception as exc:
        made = f"{record.codec} cannot be loaded here: {exc}"
    cache[key] = made
    return made


def reproduce(
    run: RunData, record: Record, image: Image, cache: dict[str, Codec | str]
) -> Reproduction:
    """Code ``image`` again as ``record`` says; the reconstruction only if the hashes match."""
    codec = _codec(run, record, cache)
    if isinstance(codec, str):
        return Reproduction(record, None, "", codec)
    try:
        data = codec.encode(image, record.rate)
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            return Reproduction(
                record, None, digest,
                f"the bitstream coded here differs from the measured one (sha256 {digest[:12]} "
                f"instead of {record.sha256[:12] or 'none'}; library {codec.library_version()}, "
                f"run used {record.codec_version or 'unknown'})",
            )  # fmt: skip
    except Exception as exc:
        return Reproduction(record, None, "", f"{record.codec} failed here: {exc}")
    return reconstruct(codec, record, image, data, record.rate)


def reconstruct(
    codec: Codec, record: Record, image: Image, data: bytes, rate: float
) -> Reproduction:
    """Decode ``data``, coded from ``image`` at ``rate`` by the codec of ``record``, with the
    pictures of the encoder's decisions (``Codec.side_images``)."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        decoded = codec.decode(data)
    except Exception as exc:
        return Reproduction(record, None, digest, f"{record.codec} failed here: {exc}")
    if decoded.shape != image.shape:
        return Reproduction(record, None, digest, f"decoded to {decoded.shape}")
    try:
        side = {
            name: picture
            for name, picture in codec.side_images(image, rate).items()
            if picture.shape == image.shape and picture.dtype == np.uint8
        }
    except Exception:  # a picture of the encoder's decisions never costs the crop
        side = {}
    return Reproduction(record, decoded, digest, side_images=side)


@dataclass
class Recoder:
    """What the cells of one image share: the run, the original, codecs built so far,
    reconstructions by (codec, rate value) and the bitstreams searches coded, by codec."""

    run: RunData
    image: Image
    codecs: dict[str, Codec | str] = field(default_factory=dict)
    done: dict[tuple[str, float], Reproduction] = field(default_factory=dict)
    coded: dict[str, dict[float, bytes]] = field(default_factory=dict)

    def from_record(self, record: Record, target: float, search_note: str = "") -> Match:
        """The cell of a measured record, coded again and checked by hash."""
        key = (record.codec, record.rate)
        if key not in self.done:
            self.done[key] = reproduce(self.run, record, self.image, self.codecs)
        psnr = record.get("psnr_rgb")
        return Match(
            target, self.done[key], record.rate, float(record.bpp or math.nan),
            float(psnr) if isinstance(psnr, int | float) else math.nan, search_note=search_note,
        )  # fmt: skip

    def searched(self, codec: Codec, nearest: Record, found: SearchResult, rate: float) -> Match:
        """The cell of the rate value the search chose (``found.rate``) and no record measured."""
        key = (nearest.codec, rate)
        if key not in self.done:
            data = self.coded[nearest.codec][rate]
            self.done[key] = reconstruct(codec, nearest, self.image, data, rate)
        made = self.done[key]
        decoded = made.decoded
        psnr = psnr_from_mse(mse_rgb(self.image, decoded)) if decoded is not None else math.nan
        return Match(
            found.target, made, rate, found.bpp, psnr, searched=True, search_note=found.note,
            probes=len(found.probes),
        )  # fmt: skip

    def match(self, records: Sequence[Record], target: float) -> Match:
        """A codec's cell for ``target``: coded here at the target when the codec can be
        searched and no record is already within the search's tolerance, else its closest
        record (a searched rate value that a record measured is that record)."""
        nearest = closest(records, target)
        codec = _codec(self.run, nearest, self.codecs)
        near_enough = abs((nearest.bpp or math.inf) / target - 1) <= DEFAULT_TOLERANCE
        if isinstance(codec, str) or not searchable(codec) or near_enough:
            return self.from_record(nearest, target)
        coded = self.coded.setdefault(nearest.codec, {})
        try:
            found = search_target(codec, self.image, target, coded)
        except Exception as exc:  # the closest record is still worth showing
            return self.from_record(nearest, target, f"the rate search failed here ({exc})")
        if found.rate is None:
            return self.from_record(nearest, target, found.note)
        measured = next((r for r in records if r.rate == found.rate), None)
        if measured is not None:
            match = self.from_record(measured, target, found.note)
            match.probes = len(found.probes)
            return match
        return self.searched(codec, nearest, found, found.rate)


def png_uri(pixels: npt.NDArray[np.uint8]) -> str:
    """An RGB array as a lossless PNG data URI."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def palette(classes: int) -> npt.NDArray[np.uint8]:
    """A colour per class: Cityscapes' for 19 classes, evenly spread hues otherwise."""
    if classes == len(CITYSCAPES_PALETTE):
        return np.array(CITYSCAPES_PALETTE, dtype=np.uint8)
    import colorsys

    colours = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95) for i in range(classes)]
    return np.array([[round(255 * c) for c in rgb] for rgb in colours], dtype=np.uint8)


def overlay(image: Image, labels: npt.NDArray[np.uint8], colours: npt.NDArray[np.uint8]) -> Image:
    """Class colours blended half-and-half over the image (ignored pixels left as they are)."""
    out = image.astype(np.float64)
    known = labels < len(colours)
    out[known] = 0.5 * out[known] + 0.5 * colours[labels[known]]
    return np.rint(out).astype(np.uint8)


def crops(run: RunData, image_id: str | None = None, *, overlays: bool = True) -> str:
    """The matched-bpp crops section (and segmentation overlays when segmentation ran)."""
    title = "Reconstructions at matched bpp"
    try:
        return section("crops", title, _crops(run, image_id, overlays))
    except Exception as exc:  # this section must never cost the rest of the report
        return section("crops", title, note(f"The crops could not be made: {exc}", "warn"))


def _crops(run: RunData, image_id: str | None, overlays: bool) -> str:
    usable = [r for r in run.records if r.ok and r.codec != REFERENCE_CODEC and r.bpp]
    if image_id is None:
        counts = {i: len({r.codec for r in usable if r.image_id == i}) for i in run.images}
        image_id = max(counts, key=lambda i: counts[i], default=None) if counts else None
        if not image_id or not counts[image_id]:
            return note("No crops: no record of a codec succeeded.")
    elif image_id not in run.images:
        return note(f"No crops: the run has no image {image_id!r}.")
    mine = [r for r in usable if r.image_id == image_id]
    codecs = [c for c in run.codecs if any(r.codec == c for r in mine)]
    if not codecs:
        return note(f"No crops: no codec coded {image_id} successfully.")
    first = mine[0]
    shape = (int(first.height or 0), int(first.width or 0))
    original, why = load_original(run, image_id, shape)
    if original is None:
        return note(f"No crops of {image_id}: {why}.")
    per_codec = {c: [r for r in mine if r.codec == c] for c in codecs}
    ranges = [
        (min(r.bpp or 0 for r in rs), max(r.bpp or 0 for r in rs)) for rs in per_codec.values()
    ]
    targets, shared = bpp_targets(ranges)
    window = detailed_window(original)
    began = time.perf_counter()
    recoder = Recoder(run, original)
    grid = [[recoder.match(per_codec[c], target) for c in codecs] for target in targets]
    recode_s = time.perf_counter() - began
    made = list(recoder.done.values())
    masks, seg_note = _segment(run, original, made) if overlays else ({}, "")
    body = note(_explanation(image_id, window, grid, recode_s, shared))
    body += note(seg_note) if seg_note else ""
    body += _grid_html(original, window, codecs, targets, grid, masks, run)
    return body


def _explanation(
    image_id: str, window: Window, grid: list[list[Match]], recode_s: float, shared: bool
) -> str:
    """What the grid shows and how it was made (searches, probes, time)."""
    cells = [m for row in grid for m in row]
    searched = sum(1 for m in cells if m.probes)
    probes = sum(m.probes for m in cells)
    text = (
        f"Image {image_id}, window {window.width}x{window.height} at ({window.x}, {window.y}), "
        "the most detailed part of the image. Each row is one target bpp. A codec whose rate "
        "can be searched is coded here at the rate value nearest the target (at most "
        f"{MAX_PROBES} trial codings per target); a codec with fixed rate points shows its "
        "record closest to the target. A record is coded again and shown only when its "
        "bitstream's SHA-256 equals the measured one. Each cell gives its bpp and its deviation "
        f"from the target; more than {100 * MAX_DEVIATION:.0f} % off, it is marked not matched "
        f"(re-coding took {recode_s:.1f} s, {searched} searches with {probes} trial codings)."
    )
    if not shared:
        text += " The codecs reach no common bpp range on this image: each shows its closest point."
    return text


def _segment(
    run: RunData, original: Image, reproductions: list[Reproduction]
) -> tuple[dict[str, npt.NDArray[np.uint8]], str]:
    """Label maps of the original ("") and of each reproduced reconstruction (by sha256)."""
    from bench.tasks.segmentation import SegmentationTask

    task = run.task
    if not isinstance(task, SegmentationTask):
        return {}, ""
    if not task.target:
        return {}, "No segmentation overlays: the manifest does not name the segmenter's class."
    options = dict(task.options)
    began = time.perf_counter()
    try:
        try:
            model = task.load_segmenter()
        except Exception:
            if options.get("device", "cpu") == "cpu":
                raise
            options["device"] = "cpu"
            model = task.load_segmenter(device="cpu")
        shown = [r for r in reproductions if r.ok]
        images = [original, *(r.decoded for r in shown if r.decoded is not None)]
        predictions = model.predict_batch(images)
    except Exception as exc:
        return {}, f"No segmentation overlays: the segmenter cannot run here ({exc})."
    spent = time.perf_counter() - began
    masks = {
        "": predictions[0],
        **{r.sha256: p for r, p in zip(shown, predictions[1:], strict=True)},
    }
    text = (
        f"Overlays: the segmenter's predictions on the whole images, recomputed here on "
        f"{options.get('device', 'cpu')} ({len(images)} images, {spent:.1f} s including loading "
        "the model), blended over the crops."
    )
    return masks, text


def _figure(uri: str, caption: str, attrs: Mapping[str, str]) -> str:
    extra = "".join(f' data-{k}="{esc(v)}"' for k, v in attrs.items())
    return (
        f'<figure class="crop"{extra}><img src="{uri}" alt="{esc(caption)}" width="256">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _grid_html(
    original: Image,
    window: Window,
    codecs: list[str],
    targets: list[float],
    grid: list[list[Match]],
    masks: Mapping[str, npt.NDArray[np.uint8]],
    run: RunData,
) -> str:
    colours = palette(
        len(run.class_names) or int(max((m.max() for m in masks.values()), default=0)) + 1
    )
    where = {
        "x": str(window.x),
        "y": str(window.y),
        "w": str(window.width),
        "h": str(window.height),
    }
    head = "".join(f"<th>{esc(c)}</th>" for c in codecs)
    first = _figure(png_uri(window.cut(original)), "original", {"kind": "original", **where})
    if "" in masks:
        first += _figure(
            png_uri(overlay(window.cut(original), window.cut(masks[""]), colours)),
            "original, segmented",
            {"kind": "overlay-original"},
        )
    rows = []
    shown: dict[tuple[str, float], float] = {}
    for index, (target, row) in enumerate(zip(targets, grid, strict=True)):
        cells = [f'<th scope="row" data-target="{target!r}">target {target:.3f} bpp</th>']
        if index == 0:
            cells.append(f'<td rowspan="{len(grid)}" class="original">{first}</td>')
        for match in row:
            if match.key in shown:
                text = f"the same reconstruction as in the target {shown[match.key]:.3f} bpp row"
                body = f'<div class="same">{esc(text)}: {esc(_caption(match))}</div>'
            else:
                shown[match.key] = target
                body = _cell(match, window, masks, colours)
            cells.append(f"<td {_cell_attrs(match)}>{_unmatched(match)}{body}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = (
        '<div class="scroll"><table class="crops"><thead><tr><th>bpp</th><th>original</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    if masks and run.class_names:
        table += _legend(run.class_names, colours)
    return table


def _cell_attrs(match: Match) -> str:
    """The cell's facts as data attributes (escaped), for readers and tests."""
    facts = {
        "codec": match.reproduction.record.codec,
        "target": repr(match.target),
        "bpp": repr(match.bpp),
        "source": "search" if match.searched else "record",
        "matched": "yes" if match.matched else "no",
    }
    return " ".join(f'data-{k}="{esc(v)}"' for k, v in facts.items())


def _unmatched(match: Match) -> str:
    """A visible mark on a cell further than MAX_DEVIATION from its target, else ""."""
    if match.matched:
        return ""
    text = f"not matched: nearest point is {deviation_text(match.bpp, match.target)}"
    return f'<div class="unmatched warn"><b>{esc(text)}</b></div>'


def _caption(match: Match) -> str:
    record = match.reproduction.record
    text = (
        f"{record.codec} {record.rate_param}={rate_text(match.rate)}: "
        f"{deviation_text(match.bpp, match.target)}, {fmt(match.psnr, 2)} dB"
    )
    if match.searched:
        text += f"; {CODED_HERE}"
    if match.search_note:
        text += f"; {match.search_note}"
    return text


def _cell(
    match: Match,
    window: Window,
    masks: Mapping[str, npt.NDArray[np.uint8]],
    colours: npt.NDArray[np.uint8],
) -> str:
    item = match.reproduction
    record = item.record
    caption = _caption(match)
    if item.decoded is None:
        expected = "" if match.searched else record.sha256
        return (
            f'<div class="missing" data-kind="missing" data-sha256="{esc(expected)}">'
            f"<b>{esc(caption)}</b><br>{esc(NOT_REPRODUCIBLE)}: {esc(item.reason)}</div>"
        )
    source = "search" if match.searched else "record"
    attrs = {"kind": "reconstruction", "sha256": item.sha256, "codec": record.codec,
             "rate": repr(match.rate), "source": source}  # fmt: skip
    out = _figure(png_uri(window.cut(item.decoded)), caption, attrs)
    if item.sha256 in masks:
        blended = overlay(window.cut(item.decoded), window.cut(masks[item.sha256]), colours)
        out += _figure(png_uri(blended), f"{record.codec}, segmented", {"kind": "overlay"})
    for name, picture in item.side_images.items():
        out += _figure(png_uri(window.cut(picture)), f"{record.codec}: {name}", {"kind": "side"})
    return out


def _legend(class_names: Sequence[str], colours: npt.NDArray[np.uint8]) -> str:
    items = "".join(
        f'<span class="swatch" style="background:rgb({c[0]},{c[1]},{c[2]})"></span>{esc(name)} '
        for name, c in zip(class_names, colours.tolist(), strict=False)
    )
    return f'<p class="legend">{items}</p>'
