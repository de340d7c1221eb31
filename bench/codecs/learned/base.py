"""What learned codecs share: bench's CompressAI-contract bitstream, padding, size limits,
availability checks, strict weight loading, network identities, and ``LearnedCodec``.

A model maps a padded float image to entropy-coded strings (``compress(x) -> {"strings",
"shape"}``) and back (``decompress(strings, shape) -> {"x_hat"}``). ``LearnedCodec`` wraps any
such model in a self-contained bitstream: a header (magic, model identity, image size,
padding, latent shape) followed by the strings, so bpp counts everything a receiver needs
beyond the weights. ``CompressAIModelCodec`` (users' own models, named by import path plus
checkpoint) and the zoo architectures live in ``compressai_codecs``; the ``gan`` and ``tic``
packages beside this module use its helpers.
"""

from __future__ import annotations

import abc
import contextlib
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.codecs.base import TRAINING_FILES, Availability, Bitstream, Codec, Image, check_image
from bench.errors import CodecError, CodecUnavailable

MAGIC = b"BLC1"
PAD_MULTIPLE = 64  # 2**6: the deepest zoo models down-sample six times (hyperprior)
MAX_MEGAPIXELS = 16.0
"""Default size limit: a whole-image pass of the largest zoo models at 16 MP needs tens of GB."""
TORCH_HINT = (
    "install the learned extra (scripts/setup.sh learned): torch 2.13 and torchvision 0.28 from "
    "the package index, CompressAI 1.2.8"
)


def write_bitstream(
    model_id: str,
    size: tuple[int, int],
    padding: tuple[int, int, int, int],
    shape: tuple[int, ...],
    strings: list[list[bytes]],
) -> bytes:
    """Header then strings: every length is explicit, nothing is implied by the model."""
    ident = model_id.encode()
    if len(ident) > 255:
        raise CodecError(f"model identity longer than 255 bytes: {model_id[:60]}...")
    parts = [
        MAGIC,
        struct.pack(">B", len(ident)),
        ident,
        struct.pack(">II", *size),
        struct.pack(">4H", *padding),
        struct.pack(">B", len(shape)),
        struct.pack(f">{len(shape)}H", *shape),
        struct.pack(">B", len(strings)),
    ]
    for group in strings:
        if len(group) != 1:
            raise CodecError(f"expected one string per latent for a single image, got {len(group)}")
        parts += [struct.pack(">I", len(group[0])), group[0]]
    return b"".join(parts)


def read_bitstream(data: bytes) -> dict[str, Any]:
    """Parse ``write_bitstream``'s output; raises CodecError on anything malformed."""
    try:
        if data[:4] != MAGIC:
            raise ValueError("not a bench learned-codec bitstream")
        at = 4
        (n,) = struct.unpack_from(">B", data, at)
        model_id = data[at + 1 : at + 1 + n].decode()
        at += 1 + n
        size = struct.unpack_from(">II", data, at)
        padding = struct.unpack_from(">4H", data, at + 8)
        (dims,) = struct.unpack_from(">B", data, at + 16)
        shape = struct.unpack_from(f">{dims}H", data, at + 17)
        at += 17 + 2 * dims
        (groups,) = struct.unpack_from(">B", data, at)
        at += 1
        strings = []
        for _ in range(groups):
            (length,) = struct.unpack_from(">I", data, at)
            chunk = data[at + 4 : at + 4 + length]
            if len(chunk) != length:
                raise ValueError("truncated string")
            strings.append([chunk])
            at += 4 + length
        if at != len(data):
            raise ValueError(f"{len(data) - at} trailing bytes")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"corrupt learned-codec bitstream: {exc}") from exc
    return {
        "model": model_id,
        "size": size,
        "padding": padding,
        "shape": shape,
        "strings": strings,
        "header_bytes": len(data) - sum(4 + len(s[0]) for s in strings),
    }


def pad_amounts(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding up to a multiple, centred as CompressAI's eval."""
    new_h, new_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return top, new_h - height - top, left, new_w - width - left


def torch_availability() -> Availability:
    """Whether torch imports here (with its version)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken CUDA/CPU build mix
        return Availability(False, f"torch is not importable ({exc})", TORCH_HINT)
    return Availability(True, f"torch {torch.__version__}")


def compressai_availability() -> Availability:
    """Whether torch and CompressAI both import here, with their versions (for the learned
    codecs built on CompressAI's entropy models and layers)."""
    found = torch_availability()
    if not found.usable:
        return found
    try:
        import compressai
    except Exception as exc:  # ImportError, or torchvision failing to load its ops
        return Availability(False, f"compressai is not importable ({exc})", TORCH_HINT)
    return Availability(True, f"{found.detail}, compressai {compressai.__version__}")


def distributions_installed(*names: str, hint: str = TORCH_HINT) -> Availability:
    """Whether the named distributions are installed (their versions), from package metadata
    only: nothing is imported, so ``bench list codecs`` does not load torch."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            return Availability(False, f"{name} is not installed", hint)
    return Availability(True, ", ".join(found))


_ENTROPY_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")
"""Buffers whose size ``update()`` sets; CompressAI's ``load_state_dict`` resizes them."""


def load_weights(
    model: Any,
    path: Path,
    what: str,
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Load a checkpoint into a CompressAI model with ``weights_only=True``, strictly.

    A checkpoint that does not fit fails with the missing, unexpected and misshapen tensors
    named (entropy-table buffers, whose size depends on ``update()``, are not compared).
    ``convert`` rewrites the tensor names first (e.g. the zoo's older names).

    Raises:
        WeightsError: unreadable checkpoint or one of another architecture.
    """
    from bench.weights import WeightsError, load_state_dict, load_strict

    state = load_state_dict(path)
    if convert is not None:
        state = convert(state)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        own = model.state_dict()
        comparable = {
            k: own[k] if k.endswith(_ENTROPY_TABLES) and k in own else v for k, v in state.items()
        }
        load_strict(model, comparable, path, what)  # raises with the names when they differ
        raise WeightsError(f"{path}: cannot load into {what}: {exc}") from exc


def weights_identity(model: Any, prefix: bytes = b"") -> bytes:
    """8 bytes naming a network: SHA-256 of ``prefix`` (e.g. its config) and its tensors'
    names, dtypes, shapes and bytes, in name order."""
    import hashlib

    import torch

    digest = hashlib.sha256(prefix)
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.digest()[:8]


@contextlib.contextmanager
def one_analysis(model: Any, shared: Sequence[str], unused: str = "") -> Iterator[None]:
    """While inside, the sub-networks ``shared`` of ``model`` remember their last call: a
    call with an input equal to the last one (same shape and values) returns the last output
    instead of running again. ``compress(x)`` then ``model(x)`` thus run the analysis once;
    the forward pass's likelihoods are the ones it would compute anyway (the sub-networks are
    deterministic for an input), only not recomputed. ``unused`` (e.g. ``g_s``, whose
    reconstruction the likelihoods never read) returns its input instead of running.
    Everything is restored on the way out."""
    import torch

    patched = []
    for name in shared:
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            module.forward = _remembering(module.forward)
            patched.append(module)
    skipped = getattr(model, unused, None) if unused else None
    if isinstance(skipped, torch.nn.Module):
        skipped.forward = _passthrough
        patched.append(skipped)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward again


def _passthrough(x: Any) -> Any:
    return x


def _remembering(forward: Callable[[Any], Any]) -> Callable[[Any], Any]:
    import torch

    last: list[Any] = []

    def remembered(x: Any) -> Any:
        if last and last[0].shape == x.shape and torch.equal(last[0], x):
            return last[1]
        y = forward(x)
        last[:] = [x, y]
        return y

    return remembered


def synchronize(device: str) -> None:
    """Wait for a CUDA device's queued work, so that timings include it (no-op on a CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def check_size(codec: str, height: int, width: int, max_megapixels: float) -> None:
    """Refuse an image larger than ``max_megapixels`` with advice, before a network codes it
    in one pass (its activations grow with the image's area).

    Raises:
        CodecError: naming the size, the limit and the option that raises it.
    """
    megapixels = height * width / 1e6
    if megapixels > max_megapixels:
        raise CodecError(
            f"{codec}: image of {width}x{height} ({megapixels:.1f} MP) is larger than "
            f"max_megapixels={max_megapixels:g}: learned codecs code the whole image in "
            "one pass, whose activations grow with its area. Crop or downscale it, or raise "
            f"the limit (--codec-option {codec}.max_megapixels=N) if memory allows"
        )


def trained_weights(codec: str, weights: str, make: str, *,
                    form: str = "CHECKPOINT_OR_DIRECTORY") -> Path:  # fmt: skip
    """The path a trained codec's ``weights`` option names.

    Raises:
        CodecUnavailable: no weights given, or a path that does not exist (saying how to
            make them: ``make``).
    """
    if not weights:
        raise CodecUnavailable(
            f"{codec}: no weights; train them ({make}) and pass "
            f"--codec-option {codec}.weights={form}"
        )
    path = Path(weights).expanduser()
    if not path.exists():
        raise CodecUnavailable(f"{codec}: weights {path} do not exist ({make})")
    return path


def checkpoints_at(
    path: Path, rate_of: Callable[[Path], float], *, what: str, make: str
) -> dict[float, Path]:
    """One checkpoint file (its rate point) or a directory of one-rate models
    (``checkpoints_by_rate``), by rate point (float32)."""
    if path.is_dir():
        return checkpoints_by_rate(path, rate_of, what=what, make=make)
    return {float(np.float32(rate_of(path))): path}


def checkpoints_by_rate(
    directory: Path, rate_of: Callable[[Path], float], *, what: str, make: str
) -> dict[float, Path]:
    """The checkpoints (``*.pt``) of a directory of one-rate models, by the rate point each
    was trained for (float32, as bitstreams carry it), lowest first.

    Args:
        directory: where they are.
        rate_of: a checkpoint's rate point; raises ``WeightsError`` (naming the file) for one
            that does not belong there.
        what: the models' name in messages ("MAE", "impmap").
        make: the command that makes one, for the message of an empty directory.

    Raises:
        WeightsError: none there, an unreadable or unfit checkpoint, or two for one rate.
    """
    from bench.weights import WeightsError

    members: dict[float, Path] = {}
    for path in sorted(directory.glob("*.pt")):
        rate = float(np.float32(rate_of(path)))
        if rate in members:
            raise WeightsError(f"{path} and {members[rate]}: two {what} models for rate point "
                               f"{rate:g}; keep one in {directory}")  # fmt: skip
        members[rate] = path
    if not members:
        raise WeightsError(f"{directory}: no {what} checkpoints (*.pt) here; make them: {make}")
    return dict(sorted(members.items()))


def describe_weights(path: Path, config: Any, training: Mapping[str, Any]) -> dict[str, Any]:
    """A trained checkpoint's provenance entry: file, SHA-256, network (``config`` with
    ``to_dict()`` and ``describe()``) and training; under ``TRAINING_FILES``, the SHA-256 of
    the images it was trained on (``bench.weights.training_record``'s ``images``)."""
    from bench.download import sha256_of

    images = training.get("images", [])
    return {
        "file": str(path),
        "sha256": sha256_of(path),
        "config": config.to_dict(),
        "size": config.describe(),
        "note": "unverified: trained by bench",
        "training": {k: v for k, v in training.items() if k != "images"},
        "training_images": len(images),
        TRAINING_FILES: [str(i["file_sha256"]) for i in images if i.get("file_sha256")],
    }


class LearnedCodec(Codec):
    """A codec made of one CompressAI-contract model per rate point.

    Subclasses implement ``load_model(rate)`` (an ``nn.Module`` with ``compress``,
    ``decompress`` and ``update``) and ``model_id(rate)`` (what the bitstream names, so that a
    decoder refuses bitstreams of another model). Encoding pads to ``pad_multiple`` (centred
    zeros, cropped back after decoding), runs ``compress`` and, for the estimated rate, the
    forward pass's likelihoods; both run under ``torch.inference_mode``. On CUDA, encode and
    decode synchronise the device before returning, so the runner's wall-clock timings cover
    the GPU work.
    """

    ceiling = None  # learned codecs have no near-lossless setting
    libraries: ClassVar[tuple[str, ...]] = ("torch",)
    pad_multiple: ClassVar[int] = PAD_MULTIPLE
    analysis_modules: ClassVar[tuple[str, ...]] = ("g_a", "h_a", "h_s")
    """Sub-networks the forward pass for the estimated rate shares with ``compress`` (each
    runs once for both, see ``one_analysis``); absent names are skipped."""
    synthesis_module: ClassVar[str] = ""
    """The sub-network whose output the forward pass returns as ``x_hat`` only, which the
    estimated rate does not need (skipped); empty where the model's forward is not known."""
    channels_last: ClassVar[bool] = False
    """Whether the model runs in channels-last memory layout on the CPU (oneDNN's faster
    convolutions: about 22 % less time per Kodak encode and decode for the hyperprior). Only
    for models made of convolutions (a ``view`` in a transformer block would fail on it).
    The summation order changes, so latents may move by about 1e-6 before rounding; on the 24
    Kodak images the bitstreams and pixels equal those of the default layout."""

    def __init__(
        self, *, device: str = "cpu", max_megapixels: float = MAX_MEGAPIXELS, batch_size: int = 1
    ) -> None:
        super().__init__()
        from bench.tasks.base import resolve_device

        self.device = resolve_device(str(device))  # a usage error now, not in every record
        self.max_megapixels = float(max_megapixels)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self._models: dict[float, Any] = {}
        self.options = {
            "device": self.device,
            "max_megapixels": self.max_megapixels,
            "batch_size": self.batch_size,
        }

    @abc.abstractmethod
    def load_model(self, rate: float) -> Any:
        """Build the model for a rate point with its weights (entropy tables not yet built)."""

    @abc.abstractmethod
    def model_id(self, rate: float) -> str:
        """The identity written into bitstreams, e.g. ``mbt2018/mse/3``."""

    def rate_of(self, model_id: str) -> float:
        """The rate point a bitstream's model identity names; CodecError if it is not ours."""
        _, _, rate = model_id.rpartition("/")
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if math.isnan(value) or self.model_id(value) != model_id:
            raise CodecError(
                f"bitstream is for {model_id}, this codec is {self.model_id(0).rpartition('/')[0]}"
            )
        return value

    def model(self, rate: float) -> Any:
        """The model for a rate point, on the device, with its entropy tables built; cached."""
        if rate not in self._models:
            model = self.load_model(rate).eval().to(self.device)
            if self._channels_last:
                import torch

                model = model.to(memory_format=torch.channels_last)
            model.update(force=True)
            self._models[rate] = model
        return self._models[rate]

    @property
    def _channels_last(self) -> bool:
        return self.channels_last and self.device == "cpu"

    def _synchronize(self) -> None:
        synchronize(self.device)

    def _check_size(self, height: int, width: int) -> None:
        check_size(self.name, height, width, self.max_megapixels)

    def encode(self, image: Image, rate: float) -> bytes:
        return self.encode_batch([image], rate)[0]

    def decode(self, data: bytes) -> Image:
        return self.decode_batch([data])[0]

    def encode_batch(self, images: Sequence[Image], rate: float) -> list[bytes]:
        """One ``compress`` (and one forward pass for the likelihoods) over a batch of
        same-shaped images; each image still gets its own self-contained bitstream."""
        import torch
        import torch.nn.functional as F

        checked = [check_image(image, self.name) for image in images]
        height, width = checked[0].shape[:2]
        if any(image.shape != checked[0].shape for image in checked):
            raise CodecError(f"{self.name}: a batch needs images of one shape")
        self._check_size(height, width)
        model = self.model(rate)
        top, bottom, left, right = pad_amounts(height, width, self.pad_multiple)
        x = torch.from_numpy(np.stack(checked)).permute(0, 3, 1, 2).float().div(255)
        x = F.pad(x.to(self.device), (left, right, top, bottom), mode="constant", value=0.0)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        shared = one_analysis(model, self.analysis_modules, self.synthesis_module)
        with torch.inference_mode(), shared:
            out = model.compress(x)
            likelihoods = model(x)["likelihoods"].values()
            bits = torch.stack(
                [-torch.log2(v.double()).flatten(1).sum(dim=1) for v in likelihoods]
            ).sum(dim=0)
            bits_per_image = [float(b) for b in bits.cpu()]
        self._synchronize()
        coded: list[bytes] = []
        for i in range(len(checked)):
            strings = [[group[i]] for group in out["strings"]]
            data = write_bitstream(
                self.model_id(rate),
                (height, width),
                (top, bottom, left, right),
                tuple(int(s) for s in out["shape"]),
                strings,
            )
            info = {
                "bpp_estimated": bits_per_image[i] / (height * width),
                "header_bytes": len(data) - sum(4 + len(s[0]) for s in strings),
                "padding": f"{top},{bottom},{left},{right}",
            }
            coded.append(Bitstream(data, info))
        return coded

    def decode_batch(self, streams: Sequence[bytes]) -> list[Image]:
        """One ``decompress`` over bitstreams of the same model, size and latent shape (as
        ``encode_batch`` makes them); others are decoded one by one."""
        import torch

        parsed = [read_bitstream(data) for data in streams]
        first = parsed[0]
        same = all(
            (p["model"], p["size"], p["padding"], p["shape"], len(p["strings"]))
            == (
                first["model"],
                first["size"],
                first["padding"],
                first["shape"],
                len(first["strings"]),
            )
            for p in parsed
        )
        if not same:
            return [image for data in streams for image in self.decode_batch([data])]
        model = self.model(self.rate_of(first["model"]))
        height, width = first["size"]
        top, _, left, _ = first["padding"]
        strings = [[p["strings"][j][0] for p in parsed] for j in range(len(first["strings"]))]
        try:
            with torch.inference_mode():
                x_hat = model.decompress(strings, torch.Size(first["shape"]))["x_hat"]
        except (RuntimeError, ValueError, IndexError) as exc:
            raise CodecError(f"{self.name}: cannot decompress: {exc}") from exc
        x_hat = x_hat[:, :, top : top + height, left : left + width].clamp(0, 1)
        decoded = x_hat.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        self._synchronize()
        return [np.ascontiguousarray(image) for image in decoded]
