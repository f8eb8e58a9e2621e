"""Load test of a running review app through its public API: many reviewers saving reviews at once.

    python -m review_app.loadtest --url http://127.0.0.1:7860/ --reviewers 8 --reviews 100 [--auth USER:PASSWORD]

Each simulated reviewer has its own ``gradio_client`` connection. First one analysis per reviewer is made
(``/analyze`` on a small generated image pair, or ``--main``/``--ref``), then every reviewer saves
``--reviews`` reviews of it through ``/record_review`` as fast as the server answers, each with a unique
comment. Afterwards ``/list_reviews`` is read back and each written review must be stored exactly once.
Prints the latency percentiles of ``/record_review``, the written and stored counts, and every error
(``database is locked`` counted apart); ``--json FILE`` keeps the report. Needs only ``gradio_client``,
numpy and Pillow (no model code), so it can run from any machine that reaches the app.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("agree", "partly", "disagree")
COMMENT_COLUMN = 10  # of the /list_reviews table (review_app.handlers.TABLE_COLUMNS; the script needs no gradio)


@dataclass
class LoadReport:
    """What one load test measured."""

    url: str
    reviewers: int
    reviews_per_reviewer: int
    written: int = 0  # reviews the API confirmed (returned a review id)
    failed: int = 0  # calls that raised
    database_locked: int = 0  # failures that mention "database is locked"
    stored: int = 0  # confirmed reviews found by /list_reviews
    duplicates: int = 0  # written reviews found more than once
    missing: int = 0  # confirmed reviews not found
    wall_s: float = 0.0
    reviews_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        expected = self.reviewers * self.reviews_per_reviewer
        return self.failed == 0 and self.written == self.stored == expected and not self.duplicates and not self.missing

    def summary(self) -> str:
        lat = self.latency_ms
        lines = [
            f"load test of {self.url}: {self.reviewers} reviewers x {self.reviews_per_reviewer} reviews",
            f"  written (confirmed by the API): {self.written}   stored (read back): {self.stored}   "
            f"missing: {self.missing}   duplicates: {self.duplicates}",
            f"  failed calls: {self.failed}   'database is locked': {self.database_locked}",
            f"  /record_review latency ms: p50 {lat.get('p50', math.nan):.0f}  p90 {lat.get('p90', math.nan):.0f}  "
            f"p99 {lat.get('p99', math.nan):.0f}  max {lat.get('max', math.nan):.0f}",
            f"  wall {self.wall_s:.1f} s, {self.reviews_per_s:.1f} reviews/s",
        ]
        lines += [f"  error: {e}" for e in self.errors[:10]]
        lines.append("  RESULT: " + ("every review stored once" if self.ok else "FAILED"))
        return "\n".join(lines)


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (and the max) of ``values``."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{q}": ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] for q in qs}
    out["max"] = ordered[-1]
    return out


def synthetic_pair(folder: Path) -> tuple[Path, Path]:
    """Two 256 x 256 grayscale PNGs that differ by a bright blob (a stand-in radiograph pair)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:256, 0:256]
    base = (60 + 120 * np.exp(-((xx - 128) ** 2 + (yy - 140) ** 2) / 9000.0)).astype(np.float32)
    blob = 70 * np.exp(-((xx - 90) ** 2 + (yy - 100) ** 2) / 200.0)
    paths = []
    for name, image in (("main.png", base + blob), ("ref.png", base)):
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "PNG")
        (folder / name).write_bytes(buffer.getvalue())
        paths.append(folder / name)
    return paths[0], paths[1]


def _client(url: str, auth: tuple[str, str] | None) -> Any:
    from gradio_client import Client

    return Client(url, auth=auth, verbose=False)


def run_load(url: str, reviewers: int = 8, reviews: int = 100, *, auth: tuple[str, str] | None = None,
             main: str | Path | None = None, ref: str | Path | None = None, progress: bool = False) -> LoadReport:
    """Run the load test against the app at ``url`` and return its report (see the module docstring)."""
    from gradio_client import handle_file

    report = LoadReport(url, reviewers, reviews)
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="diffvqa-load-") as tmp:
        if main is None or ref is None:
            main, ref = synthetic_pair(Path(tmp))
        setup = _client(url, auth)
        analysis_ids = [int(setup.predict(handle_file(str(main)), handle_file(str(ref)),
                                          "what has changed compared to the reference image?",
                                          api_name="/analyze")[2]) for _ in range(reviewers)]
    clients = [_client(url, auth) for _ in range(reviewers)]
    latencies: list[float] = []
    confirmed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(reviewers + 1)

    def reviewer(number: int) -> None:
        client, name = clients[number], f"load-{run}-r{number}"
        start.wait()
        for i in range(reviews):
            comment = f"load {run} r{number} #{i}"
            began = time.perf_counter()
            try:
                client.predict(analysis_ids[number], VERDICTS[i % 3], f"correction {i}", 1 + i % 5, comment, name,
                               api_name="/record_review")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                text = " ".join(str(exc).split())[:300] or type(exc).__name__
                with lock:
                    report.failed += 1
                    report.database_locked += "database is locked" in text.lower()
                    report.errors.append(f"r{number} #{i}: {text}")
                continue
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)
                confirmed.append(comment)
                if progress and len(confirmed) % 100 == 0:
                    print(f"  {len(confirmed)} reviews confirmed", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=reviewer, args=(n,), daemon=True) for n in range(reviewers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    report.wall_s = round(time.perf_counter() - began, 2)
    report.written = len(confirmed)
    report.reviews_per_s = round(report.written / report.wall_s, 2) if report.wall_s else 0.0
    report.latency_ms = {k: round(v * 1000, 1) for k, v in percentiles(latencies).items()}

    table, _count = setup.predict(None, list(VERDICTS), "", "", "", api_name="/list_reviews")
    seen = Counter(row[COMMENT_COLUMN] for row in table["data"] if str(row[COMMENT_COLUMN]).startswith(f"load {run} "))
    report.stored = sum(min(seen[c], 1) for c in confirmed)
    report.missing = len(confirmed) - report.stored
    report.duplicates = sum(1 for c in confirmed if seen[c] > 1)
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m review_app.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/", help="the running app")
    parser.add_argument("--reviewers", type=int, default=8, help="concurrent reviewers (one connection each)")
    parser.add_argument("--reviews", type=int, default=100, help="reviews per reviewer")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="login, when the app runs with --auth")
    parser.add_argument("--main", help="main image to analyse (default: a generated pair)")
    parser.add_argument("--ref", help="reference image to analyse")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test; exit status 0 when every review was stored exactly once without errors."""
    args = parse_args(argv)
    auth = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = (user, password)
    report = run_load(args.url, args.reviewers, args.reviews, auth=auth, main=args.main, ref=args.ref, progress=True)
    print(report.summary(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2), encoding="utf-8")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
