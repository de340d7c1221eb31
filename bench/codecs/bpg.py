"""BPG through the reference ``bpgenc`` / ``bpgdec`` programs of libbpg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from bench.codecs.base import (
    Availability,
    Ceiling,
    Codec,
    Image,
    RateScale,
    check_image,
    choice,
    flag,
)
from bench.errors import CodecError, CodecUnavailable

_HINT = (
    "build libbpg (bellard.org/bpg: `make` with USE_X265=y gives bpgenc and bpgdec) and put "
    "bpgenc and bpgdec on PATH, or set BENCH_BPGENC and BENCH_BPGDEC, or pass "
    "--codec-option bpg.bpgenc=PATH --codec-option bpg.bpgdec=PATH"
)
_COLOR_SPACES = ("ycbcr", "rgb", "ycgco", "ycbcr_bt709", "ycbcr_bt2020")
_TIMEOUT_S = 600


def _find(program: str, configured: str) -> str | None:
    candidate = configured or os.environ.get(f"BENCH_{program.upper()}", "")
    if candidate:
        return candidate if os.access(candidate, os.X_OK) else None
    return shutil.which(program)


def _run(command: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(command, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise CodecUnavailable(f"bpg: {command[0]} not found; {_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CodecError(f"bpg: {what} took longer than {_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise CodecError(f"bpg: {what} exited with status {result.returncode}: {message[-500:]}")
    return result


class BpgCodec(Codec):
    """BPG (HEVC intra in Bellard's container) with the reference programs, QP 0-51.

    Options mirror bpgenc and default as it does: ``chroma`` 420 (-f), ``color_space`` ycbcr
    (-c), ``bit_depth`` 8 (-b), ``level`` 8 (-m), ``encoder`` x265 (-e), ``lossless`` (-lossless);
    ``bpgenc`` / ``bpgdec`` give the programs' paths when they are not on PATH.
    """

    name = "bpg"
    description = "BPG (reference bpgenc/bpgdec), QP 0-51"
    rate_scale = RateScale("qp", 0, 51, quality_rises=False)
    ceiling = Ceiling(rate=0, min_psnr_db=48.0, options={"chroma": "444"})

    def __init__(
        self,
        *,
        chroma: str = "420",
        color_space: str = "ycbcr",
        bit_depth: int = 8,
        level: int = 8,
        encoder: str = "x265",
        lossless: bool = False,
        bpgenc: str = "",
        bpgdec: str = "",
    ) -> None:
        super().__init__()
        self.chroma = choice(chroma, ("420", "422", "444"), "chroma")
        self.color_space = choice(color_space, _COLOR_SPACES, "color_space")
        if not 8 <= int(bit_depth) <= 12:
            raise ValueError(f"option bit_depth={bit_depth} must be in 8..12")
        self.bit_depth = int(bit_depth)
        if not 1 <= int(level) <= 9:
            raise ValueError(f"option level={level} must be in 1..9")
        self.level = int(level)
        self.encoder = choice(encoder, ("x265", "jctvc"), "encoder")
        self.lossless = flag(lossless, "lossless")
        self.bpgenc = str(bpgenc)
        self.bpgdec = str(bpgdec)
        self.options = {
            "chroma": self.chroma,
            "color_space": self.color_space,
            "bit_depth": self.bit_depth,
            "level": self.level,
            "encoder": self.encoder,
            "lossless": self.lossless,
            "bpgenc": self.bpgenc,
            "bpgdec": self.bpgdec,
        }

    @classmethod
    def availability(cls) -> Availability:
        return cls().probe()

    def probe(self) -> Availability:
        """Find the programs and read bpgenc's version line."""
        encoder, decoder = _find("bpgenc", self.bpgenc), _find("bpgdec", self.bpgdec)
        missing = [name for name, path in (("bpgenc", encoder), ("bpgdec", decoder)) if not path]
        if missing or encoder is None:
            return Availability(False, f"{' and '.join(missing)} not found", _HINT)
        result = subprocess.run([encoder, "-h"], capture_output=True, check=False, timeout=30)
        banner = (result.stdout + result.stderr).decode(errors="replace").splitlines()
        version = next((line.strip() for line in banner if "version" in line.lower()), "bpgenc")
        return Availability(True, version)

    def library_version(self) -> str:
        return self.probe().detail

    def _programs(self) -> tuple[str, str]:
        encoder, decoder = _find("bpgenc", self.bpgenc), _find("bpgdec", self.bpgdec)
        if not encoder or not decoder:
            raise CodecUnavailable(f"bpg: bpgenc/bpgdec not found; {_HINT}")
        return encoder, decoder

    def encode(self, image: Image, rate: float) -> bytes:
        encoder, _ = self._programs()
        image = check_image(image, self.name)
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.png", Path(tmp) / "out.bpg"
            PILImage.fromarray(image).save(source, compress_level=1)
            command = [
                encoder,
                "-o",
                str(target),
                "-q",
                str(int(rate)),
                "-f",
                self.chroma,
                "-c",
                self.color_space,
                "-b",
                str(self.bit_depth),
                "-m",
                str(self.level),
                "-e",
                self.encoder,
            ]
            if self.lossless:
                command.append("-lossless")
            _run([*command, str(source)], "bpgenc")
            return target.read_bytes()

    def decode(self, data: bytes) -> Image:
        _, decoder = self._programs()
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.bpg", Path(tmp) / "out.ppm"
            source.write_bytes(data)
            _run([decoder, "-o", str(target), str(source)], "bpgdec")
            try:
                with PILImage.open(target) as im:
                    return np.asarray(im.convert("RGB"), dtype=np.uint8)
            except OSError as exc:
                raise CodecError(f"bpg: cannot read bpgdec's output: {exc}") from exc
