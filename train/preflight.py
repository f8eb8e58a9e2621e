"""Checks made before a run spends any time: does the official scorer run on this machine?

Validation (each epoch of ``fit``) and ``evaluate`` score answers with pycocoevalcap, whose PTBTokenizer and
METEOR 1.5 are Java programs: PTBTokenizer writes its input to a temporary file inside its own package folder,
METEOR starts a JVM with a 2 GB heap and reads its paraphrase table from the package. Without Java, a GPU run
would train a whole epoch and then die in its first validation. ``check_scorer`` tokenizes one line with the
real PTBTokenizer (Java, the package folder writable) and checks what METEOR needs, in about a second, and says
what to install when something is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_JAVA = ("install a Java runtime, 8 or newer (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
                "conda: `conda install -c conda-forge openjdk`; macOS: `brew install openjdk`) and make sure "
                "`java` is on PATH")


class ScorerUnavailableError(RuntimeError):
    """The official scorer cannot run here; the message says what to install or fix."""


def _package_dirs() -> tuple[Path, Path]:
    """pycocoevalcap's tokenizer and METEOR folders (where its jars are and its temporary files go)."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap.tokenizer.ptbtokenizer")
    except ImportError:
        spec = None
    if spec is None or not spec.origin:
        raise ScorerUnavailableError("the scorer needs pycocoevalcap: `pip install pycocoevalcap`")
    root = Path(spec.origin).resolve().parents[1]  # a namespace package: no __init__.py, no __file__
    return root / "tokenizer", root / "meteor"


def _run_java(arguments: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["java", *arguments], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ScorerUnavailableError(f"`java {' '.join(arguments)}` did not run ({error}): {INSTALL_JAVA}") from None


def check_scorer() -> None:
    """Raises ScorerUnavailableError unless pycocoevalcap's Java scorers can run here (about 1 s).

    Checks, in order: ``java`` on PATH; a JVM that starts with METEOR's 2 GB heap; pycocoevalcap's tokenizer
    folder writable; the jars and METEOR's paraphrase table present; one line through the real PTBTokenizer.
    """
    if shutil.which("java") is None:
        raise ScorerUnavailableError("the official scorer (pycocoevalcap's PTBTokenizer and METEOR 1.5, used by "
                                     f"validation and evaluate) needs Java, and `java` is not on PATH: {INSTALL_JAVA}")
    heap = _run_java(["-Xmx2G", "-version"])
    if heap.returncode != 0:
        raise ScorerUnavailableError("Java cannot start with the 2 GB heap METEOR asks for (`java -Xmx2G -version` "
                                     f"failed: {heap.stderr.strip()[-300:]}); free memory or raise the limit")
    tokenizer_dir, meteor_dir = _package_dirs()
    try:
        with tempfile.NamedTemporaryFile(dir=tokenizer_dir):
            pass
    except OSError as error:
        raise ScorerUnavailableError(
            f"pycocoevalcap's PTBTokenizer writes temporary files into its own folder {tokenizer_dir}, which this "
            f"user cannot write ({error.strerror}): install pycocoevalcap where you can write (a virtual "
            "environment: `python -m venv .venv && .venv/bin/pip install pycocoevalcap`) or make that folder "
            "writable") from None
    for needed in (tokenizer_dir / "stanford-corenlp-3.4.1.jar", meteor_dir / "meteor-1.5.jar",
                   meteor_dir / "data" / "paraphrase-en.gz"):
        if not needed.is_file():
            raise ScorerUnavailableError(f"pycocoevalcap is incomplete: {needed} is missing; reinstall it "
                                         "(`pip install --force-reinstall pycocoevalcap`)")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    try:
        tokens = PTBTokenizer().tokenize({0: [{"caption": "Is there any edema?"}]})
    except Exception as error:  # noqa: BLE001 - whatever Java said, the run could not score
        raise ScorerUnavailableError(f"PTBTokenizer (Java) failed on a one-line test: {error}") from None
    if tokens != {0: ["is there any edema"]}:
        raise ScorerUnavailableError(f"PTBTokenizer (Java) gave {tokens!r} for a one-line test; check the Java "
                                     "installation (`java -version`)")
