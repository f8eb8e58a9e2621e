"""The model in a process of its own, so that `python app.py` imports Gradio while PyTorch loads the model.

Importing Gradio takes ~5 s on 2 CPU cores, importing PyTorch, transformers and timm ~8 s more; in one process
(one interpreter lock) they add up. ``ModelProcess`` starts ``python -m review_app.model_process`` at once, and
the app's UI process, which never imports PyTorch, talks to it over an authenticated local connection
(``multiprocessing.connection``, pickled messages). It offers the part of ``DiffVQAPipeline`` that
``ReviewService`` uses (``analyze``, ``reanalyze``, ``fuse``, ``config``, ``checkpoint_name``,
``checkpoint_sha256``, ``is_demo``); a call made while the model is still loading waits for it. An error raised
in the model process comes back by kind and message (``ImageReadError``, another ``ValueError`` such as a bad
question or lambda, ``OSError``; anything else as a ``RuntimeError`` naming its type): the review app shows
``ValueError`` messages to the reviewer and logs the rest. The connection is authenticated with a secret only the
two processes know (``multiprocessing.connection``); nothing else is ever unpickled.

The model process ends when the connection closes (the app stopped, even if killed) or on ``close``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Client, Connection, Listener
from typing import TYPE_CHECKING, Any

from diffvqa_core.analysis_view import AnalysisView

if TYPE_CHECKING:  # imported where used: `python app.py` starts the model process before anything heavy is imported
    import numpy as np

    from review_app.preload_memo import PreloadMemo

log = logging.getLogger("diffvqa.app")
SENT_ERRORS = ("ImageReadError", "ValueError", "OSError", "RuntimeError")
"""The kinds of error that cross from the model process (see ``_error_message``)."""
KEY_ENVIRONMENT = "DIFFVQA_MODEL_PROCESS_KEY"
"""Where the model process finds the connection's secret (not on its command line, which others can read)."""
KEPT_ANALYSES = 64
"""Analyses whose features the model process keeps for a re-answer (the review service keeps 32)."""


class ModelProcessError(RuntimeError):
    """The model could not be loaded, or its process stopped; the message says why."""


@dataclass
class RemoteAnalysis(AnalysisView):
    """An analysis made in the model process: the fields of ``AnalysisView``; its features stay there under
    ``handle`` (-1: none, e.g. read back from a ``PreloadMemo``)."""

    handle: int = -1
    films: tuple[Any, Any] = field(default=(None, None), repr=False, compare=False)
    """The films it was made from (kept in the UI process), to analyse again if the model process forgot it."""


# ------------------------------------------------------------------------------------------------ UI side
class ModelProcess:
    """The review app's pipeline, run in a child process (see the module).

    Args:
        checkpoint: checkpoint folder; None for the bundled demo (a random tiny model when it is missing).
        device: ``--device`` of the app (auto, cpu, cuda).
        precision: ``--precision`` of the app (auto, bf16, fp32).
    """

    def __init__(self, checkpoint: str | None = None, device: str = "auto", precision: str = "auto") -> None:
        self.options = {"checkpoint": checkpoint, "device": device, "precision": precision}
        key = secrets.token_bytes(32)
        self._listener = Listener(authkey=key)
        self._connection: Connection | None = None
        self._facts: dict[str, Any] = {}
        self._local_facts: dict[str, Any] | None = None  # read from the files once the model process is started
        self._config: Any = None
        self._failure: str | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "review_app.model_process", str(self._listener.address), json.dumps(self.options)],
            env={**os.environ, KEY_ENVIRONMENT: key.hex()}, stdin=subprocess.DEVNULL)
        from diffvqa_core.checkpoint_files import checkpoint_facts

        self._local_facts = checkpoint_facts(checkpoint)  # from the files: the banner needs no model
        threading.Thread(target=self._connect, name="model-process-connect", daemon=True).start()
        threading.Thread(target=self._watch, name="model-process-watch", daemon=True).start()
        atexit.register(self.close)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> ModelProcess:
        """Start loading the model ``python app.py ARGV`` asks for, before the app parses the rest."""
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--checkpoint")
        parser.add_argument("--device", default="auto")
        parser.add_argument("--precision", default="auto")
        known, _ = parser.parse_known_args(argv)
        return cls(known.checkpoint, known.device, known.precision)

    def _connect(self) -> None:
        try:
            connection = self._listener.accept()
            status, payload = connection.recv()
        except (OSError, EOFError) as exc:
            self._fail(f"the model process stopped before the model was loaded ({exc.__class__.__name__})")
            return
        if status == "ready":
            self._connection, self._facts = connection, payload
            self._ready.set()
        else:
            connection.close()
            self._fail(str(payload))

    def _watch(self) -> None:
        code = self._process.wait()
        if not self._ready.is_set():
            self._fail(f"the model process exited (code {code}) before the model was loaded")

    def _fail(self, message: str) -> None:
        if self._failure is None and not self._ready.is_set():
            self._failure = message
            self._ready.set()
        try:
            self._listener.close()  # wakes up a pending accept
        except OSError:
            pass

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded.

        Raises:
            ModelProcessError: it could not be loaded (the reason, e.g. a missing checkpoint or no CUDA), or
                ``timeout`` seconds passed.
        """
        if not self._ready.wait(timeout):
            raise ModelProcessError(f"the model was not loaded within {timeout:g} s")
        if self._failure is not None:
            raise ModelProcessError(self._failure)

    @property
    def ready(self) -> bool:
        """Whether the model is loaded (False while loading or after a failure)."""
        return self._ready.is_set() and self._failure is None

    @property
    def knows_checkpoint(self) -> bool:
        """Whether the checkpoint's name, digest and config are known (read from its files, or from the model)."""
        return self._local_facts is not None or self.ready

    def preload_memo(self, folder: str | os.PathLike[str]) -> PreloadMemo | None:
        """A memo of analyses made by this checkpoint under these options (None when its files are not all there)."""
        from diffvqa_core.checkpoint_files import checkpoint_folder
        from review_app.preload_memo import PreloadMemo, model_identity

        if self._local_facts is None:
            return None
        return PreloadMemo(folder, model_identity(checkpoint_folder(self.options["checkpoint"]),
                                                  self._local_facts["checkpoint_sha256"], self.options))

    @staticmethod
    def remembered(fields: dict[str, Any], films: tuple[Any, Any]) -> RemoteAnalysis:
        """An analysis read back from a ``PreloadMemo``; the model process has no features for it, so a re-answer
        analyses its films again."""
        return RemoteAnalysis(**fields, handle=-1, films=films)

    # -- the pipeline's facts ----------------------------------------------------------------------------
    def _fact(self, name: str) -> Any:
        if not self._ready.is_set() and self._local_facts is not None:
            return self._local_facts[name]
        self.wait_ready()
        return self._facts[name]

    @property
    def config(self) -> Any:
        """The model's ``DiffVQAConfig``."""
        if self._config is None:
            from diffvqa_core.config import DiffVQAConfig

            self._config = DiffVQAConfig.from_dict(self._fact("config"))
        return self._config

    @property
    def checkpoint_name(self) -> str:
        return self._fact("checkpoint_name")

    @property
    def checkpoint_sha256(self) -> str:
        return self._fact("checkpoint_sha256")

    @property
    def is_demo(self) -> bool:
        return self._fact("is_demo")

    # -- the pipeline's calls ----------------------------------------------------------------------------
    def _call(self, kind: str, *args: Any) -> Any:
        self.wait_ready()
        with self._lock:
            try:
                self._connection.send((kind, args))  # type: ignore[union-attr]
                status, payload = self._connection.recv()  # type: ignore[union-attr]
            except (OSError, EOFError):
                raise ModelProcessError("the model process stopped: restart the app") from None
        if status == "error":
            from diffvqa_core.imaging import ImageReadError

            kind, message = payload
            raise {"ImageReadError": ImageReadError, "ValueError": ValueError, "OSError": OSError}.get(
                kind, RuntimeError)(message)
        return payload

    def analyze(self, main: Any, ref: Any, question: str, lam: float | None = None) -> RemoteAnalysis:
        """``DiffVQAPipeline.analyze`` in the model process."""
        analysis = self._call("analyze", main, ref, question, lam)
        analysis.films = (main, ref)
        return analysis

    def reanalyze(self, analysis: RemoteAnalysis, lam: float | None = None) -> RemoteAnalysis:
        """``DiffVQAPipeline.reanalyze`` in the model process (from the films again if it forgot the features)."""
        result = self._call("reanalyze", analysis.handle, lam)
        if result is None:
            return self.analyze(*analysis.films, analysis.question, analysis.lam if lam is None else lam)
        result.films = analysis.films
        return result

    def fuse(self, analysis: RemoteAnalysis, lam: float) -> np.ndarray:
        """M at another lambda for an overlay, here (no network pass; as ``DiffVQAPipeline.fuse``)."""
        from diffvqa_core.fusion import fuse_for_display

        return fuse_for_display(analysis.prior_mask, analysis.adaptive_mask, lam,
                                use_saliency_mask=bool(self.config.use_saliency_mask))

    def close(self) -> None:
        """Stop the model process (also at exit)."""
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        try:
            self._listener.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------- model side
def device_placement(device_name: str, precision: str) -> dict[str, Any]:
    """``load_pipeline`` keywords for ``--device`` / ``--precision``: {} for the default (CPU, fp32).

    Raises:
        diffvqa_core.devices.DeviceError: CUDA asked for where there is none (a ValueError with the reason).
    """
    import torch

    from diffvqa_core.devices import inference_dtype, resolve_device

    device = resolve_device(device_name)
    dtype = inference_dtype(device, precision)
    return {} if (device.type, dtype) == ("cpu", torch.float32) else {"device": device, "dtype": dtype}


def load_pipeline(checkpoint: str | None, **placement: Any) -> Any:
    """The checkpoint asked for; without one the bundled demo, else a random-weight tiny model (with a banner).

    ``placement``: ``device`` and ``dtype`` for ``DiffVQAPipeline.from_pretrained`` (default: CPU, fp32).
    """
    from diffvqa_core import DiffVQAConfig, DiffVQAPipeline

    if checkpoint is not None:
        return DiffVQAPipeline.from_pretrained(checkpoint, **placement)
    try:
        return DiffVQAPipeline.from_pretrained(None, **placement)
    except FileNotFoundError as exc:
        log.warning("%s; falling back to a random-weight tiny model (answers are meaningless)", exc)
        dtype = {key: value for key, value in placement.items() if key == "dtype"}
        pipeline = DiffVQAPipeline.from_config(DiffVQAConfig.from_preset("tiny"), **dtype)
        pipeline.model.to(placement.get("device", "cpu"))
        return pipeline


def _remote(analysis: Any, handle: int) -> RemoteAnalysis:
    return RemoteAnalysis(**{f.name: getattr(analysis, f.name) for f in fields(AnalysisView)}, handle=handle)


def _error_message(error: BaseException) -> tuple[str, str]:
    """(kind, message) of an error for the UI process: a kind of ``SENT_ERRORS``."""
    from diffvqa_core.imaging import ImageReadError

    for kind in (ImageReadError, ValueError, OSError):
        if isinstance(error, kind):
            return kind.__name__, str(error)
    return "RuntimeError", f"{type(error).__name__}: {error}"


LOADING_NICENESS = 10
"""How much lower this process's CPU priority is while it loads the model: on a 2-core machine the app's own
process, and the browser drawing the first page, come first (a later start shows a kept analysis and needs no
model for it). Raised back once the model is in where the system allows it (a non-root process may not raise
it: it then answers at that priority, which costs nothing while nothing else runs)."""


def _lower_priority() -> int | None:
    """Lower this process's priority by ``LOADING_NICENESS``; returns the priority before, None if unsupported."""
    try:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, before + LOADING_NICENESS))
        return before
    except (AttributeError, OSError):  # no POSIX priorities (Windows), or not allowed
        return None


def _restore_priority(before: int | None) -> None:
    if before is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, before)
    except OSError:  # raising a priority needs privileges: stay where we are
        pass


def serve(connection: Connection, options: dict[str, Any]) -> int:
    """Load the model (at a lower CPU priority), say so, then answer requests until the connection closes."""
    before = _lower_priority()
    try:
        pipeline = load_pipeline(options["checkpoint"], **device_placement(options["device"], options["precision"]))
    except (OSError, ValueError) as exc:
        connection.send(("failed", str(exc)))
        return 2
    _restore_priority(before)
    connection.send(("ready", {"config": pipeline.config.to_dict(),
                               "checkpoint_name": pipeline.checkpoint_name,
                               "checkpoint_sha256": pipeline.checkpoint_sha256,
                               "is_demo": bool(getattr(pipeline, "is_demo", False))}))
    kept: OrderedDict[int, Any] = OrderedDict()
    next_handle = 0
    while True:
        try:
            kind, args = connection.recv()
        except (EOFError, OSError):
            return 0
        try:
            if kind == "analyze":
                analysis = pipeline.analyze(*args)
            elif kind == "reanalyze":
                handle, lam = args
                if handle not in kept:
                    connection.send(("ok", None))
                    continue
                analysis = pipeline.reanalyze(kept[handle], lam=lam)
            else:
                raise ValueError(f"unknown request {kind!r}")
        except Exception as exc:  # noqa: BLE001 - raised again in the UI process, which decides what to show
            connection.send(("error", _error_message(exc)))
            continue
        next_handle += 1
        kept[next_handle] = analysis
        while len(kept) > KEPT_ANALYSES:
            kept.popitem(last=False)
        connection.send(("ok", _remote(analysis, next_handle)))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m review_app.model_process ADDRESS OPTIONS_JSON`` (started by ``ModelProcess``)."""
    address, options = (argv if argv is not None else sys.argv[1:])[:2]
    key = bytes.fromhex(os.environ.pop(KEY_ENVIRONMENT))
    connection = Client(address, authkey=key)
    try:
        return serve(connection, json.loads(options))
    except (BrokenPipeError, ConnectionResetError):  # the app stopped while this process was busy
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from review_app import model_process  # the module by its name: what it sends must unpickle in the app

    sys.exit(model_process.main())
