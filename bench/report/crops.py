"""Side-by-side crops of reconstructions at matched bpp, re-coded and checked by hash.

A run keeps no reconstructions, so they are made again: the original image is coded once
more with the record's codec, options and rate, and a crop is shown only when the new
bitstream's SHA-256 equals the one the record measured. Anything else (a codec not
installed here, a different library version, a moved image file) is said, never shown.
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
from bench.records import Record
from bench.report.markup import esc, fmt, note, rate_text, section
from bench.report.rundir import RunData

CROP_SIZE = 256
TARGETS = 3
NOT_REPRODUCIBLE = "not reproducible on this machine"

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
        decoded = codec.decode(data)
    except Exception as exc:
        return Reproduction(record, None, "", f"{record.codec} failed here: {exc}")
    if decoded.shape != image.shape:
        return Reproduction(record, None, digest, f"decoded to {decoded.shape}")
    try:
        side = {
            name: picture
            for name, picture in codec.side_images(image, record.rate).items()
            if picture.shape == image.shape and picture.dtype == np.uint8
        }
    except Exception:  # a picture of the encoder's decisions never costs the crop
        side = {}
    return Reproduction(record, decoded, digest, side_images=side)


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
    cache: dict[str, Codec | str] = {}
    done: dict[tuple[str, float], Reproduction] = {}
    grid: list[list[Reproduction]] = []
    for target in targets:
        row = []
        for codec in codecs:
            record = closest(per_codec[codec], target)
            key = (record.codec, record.rate)
            if key not in done:
                done[key] = reproduce(run, record, original, cache)
            row.append(done[key])
        grid.append(row)
    recode_s = time.perf_counter() - began
    masks, seg_note = _segment(run, original, list(done.values())) if overlays else ({}, "")
    text = (
        f"Image {image_id}, window {window.width}x{window.height} at ({window.x}, {window.y}), "
        f"the most detailed part of the image. Each codec's rate point closest to the bpp of "
        f"the row, coded again here and shown only when its bitstream's SHA-256 equals the "
        f"measured one (re-coding took {recode_s:.1f} s)."
    )
    if not shared:
        text += " The codecs reach no common bpp range on this image: each shows its closest point."
    body = note(text) + (note(seg_note) if seg_note else "")
    body += _grid_html(original, window, codecs, targets, grid, masks, run)
    return body


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
    grid: list[list[Reproduction]],
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
        cells = [f'<th scope="row">≈ {target:.3f} bpp</th>']
        if index == 0:
            cells.append(f'<td rowspan="{len(grid)}" class="original">{first}</td>')
        for item in row:
            key = (item.record.codec, item.record.rate)
            if key in shown:
                text = f"the rate point of the ≈ {shown[key]:.3f} bpp row ({_caption(item.record)})"
                cells.append(f'<td><div class="same">{esc(text)}</div></td>')
                continue
            shown[key] = target
            cells.append(f"<td>{_cell(item, window, masks, colours)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = (
        '<div class="scroll"><table class="crops"><thead><tr><th>bpp</th><th>original</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    if masks and run.class_names:
        table += _legend(run.class_names, colours)
    return table


def _caption(record: Record) -> str:
    return (
        f"{record.codec} {record.rate_param}={rate_text(record.rate)}: {fmt(record.bpp, 3)} bpp, "
        f"{fmt(record.psnr_rgb, 2)} dB"
    )


def _cell(
    item: Reproduction,
    window: Window,
    masks: Mapping[str, npt.NDArray[np.uint8]],
    colours: npt.NDArray[np.uint8],
) -> str:
    record = item.record
    caption = _caption(record)
    if item.decoded is None:
        return (
            f'<div class="missing" data-kind="missing" data-sha256="{esc(record.sha256)}">'
            f"<b>{esc(caption)}</b><br>{esc(NOT_REPRODUCIBLE)}: {esc(item.reason)}</div>"
        )
    attrs = {"kind": "reconstruction", "sha256": item.sha256, "codec": record.codec,
             "rate": repr(record.rate)}  # fmt: skip
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
