"""The analysis of the example the app opens on, kept on disk from one start of the app to the next.

Every page of ``python app.py`` opens on the first synthetic example analysed. The model needs ~8 s to load on 2
CPU cores; the UI is served in ~5. So the app keeps that one analysis (answer, warp, masks: what a page shows) in
its data folder, under a key made of everything the result depends on: the checkpoint's files, the model
process's options (device, precision), the source of ``diffvqa_core``, the versions of the libraries that compute
it, and the films, question and lambda themselves. A later start with the same key opens on it at once; any change
to any of them computes it again. Nothing but numbers and text is stored (``numpy.savez``, read without pickle).

The pictures a page shows of it (films, registered pair, masks, subtraction: ~2.5 MB of PNG that take ~1.5 s to
render and encode on 2 busy cores) are kept beside it, under a key that adds the source of ``review_app`` (which
draws them), and copied into a fresh temporary folder when used (Gradio serves files from there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import diffvqa_core
from diffvqa_core.checkpoint_files import WEIGHTS_FILE

log = logging.getLogger("diffvqa.app")
KEPT = 4
"""Memo files kept (the newest); one per checkpoint and example in practice."""
ARRAYS = ("theta", "main_image", "ref_image", "registered_main", "prior_mask", "adaptive_mask", "fused_mask")
TEXTS = ("answer", "question", "answered_by")
LIBRARIES = ("torch", "transformers", "timm", "opencv-python-headless", "numpy")
PICTURES = "pictures"
"""Sub-folder of the memo that holds the kept pictures, one folder per key."""
MANIFEST = "manifest.json"
DRAWING_LIBRARIES = ("numpy", "opencv-python-headless", "pillow", "matplotlib")


def model_identity(checkpoint_dir: Path, weights_sha256: str, options: dict[str, Any]) -> str:
    """A digest of what an analysis depends on besides its inputs: the checkpoint folder's files (the weights by
    their digest, already taken for the banner), the options the model runs under, the source of ``diffvqa_core``
    and the library versions."""
    digest = hashlib.sha256(json.dumps([options, weights_sha256], sort_keys=True).encode())
    for path in sorted(p for p in checkpoint_dir.iterdir() if p.is_file() and p.name != WEIGHTS_FILE):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    _add_sources(digest, Path(diffvqa_core.__file__).parent.rglob("*.py"))
    _add_versions(digest, LIBRARIES)
    return digest.hexdigest()


def _add_sources(digest: Any, paths: Iterable[Path]) -> None:
    """Feed each source file (name and bytes, in sorted order) into ``digest``."""
    for path in sorted(paths):
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(path.read_bytes())


def _add_versions(digest: Any, names: Iterable[str]) -> None:
    """Feed the installed version of each distribution (or "absent") into ``digest``."""
    for name in names:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent".encode())


class PreloadMemo:
    """Analyses on disk under ``folder``, for one model identity (see the module).

    Args:
        folder: where the memo files go (created when needed).
        identity: ``model_identity`` of the model that makes the analyses.
    """

    def __init__(self, folder: str | Path, identity: str) -> None:
        self.folder = Path(folder)
        self.identity = identity

    def key(self, main: np.ndarray, ref: np.ndarray, question: str, lam: float | None) -> str:
        """The file name stem of an analysis of these films, question and lambda."""
        digest = hashlib.sha256(self.identity.encode())
        for film in (main, ref):
            film = np.ascontiguousarray(film)
            digest.update(f"{film.shape}{film.dtype}".encode())
            digest.update(film.tobytes())
        digest.update(json.dumps([question, lam]).encode())
        return digest.hexdigest()[:32]

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored fields of an analysis (``ARRAYS``, ``TEXTS``, ``lam``, ``num_beams``), or None."""
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                fields: dict[str, Any] = {name: stored[name].copy() for name in ARRAYS}
                fields.update({name: str(stored[name]) for name in TEXTS})
                fields["lam"], fields["num_beams"] = float(stored["lam"]), int(stored["num_beams"])
                return fields
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError):  # damaged or from an older layout: compute it again
            log.warning("ignoring the unreadable memo %s", path)
            return None

    def put(self, key: str, analysis: Any) -> None:
        """Store an analysis (anything with the fields of ``diffvqa_core.pipeline.Analysis``); a failure to write
        is logged, never raised (the memo only saves time)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self.folder / f"{key}.partial.npz"
            np.savez(temporary, **{name: np.asarray(getattr(analysis, name)) for name in ARRAYS},
                     **{name: np.array(str(getattr(analysis, name))) for name in TEXTS},
                     lam=np.array(float(analysis.lam)), num_beams=np.array(int(analysis.num_beams)))
            temporary.replace(self.folder / f"{key}.npz")
            for old in sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-KEPT]:
                old.unlink(missing_ok=True)
        except OSError:
            log.warning("could not keep the example's analysis in %s", self.folder, exc_info=True)

    def picture_key(self, main: str | Path, ref: str | Path, question: str, lam: float | None) -> str:
        """The folder name of the pictures of this analysis: the analysis's identity, both film files, question and
        lambda, the source of ``review_app`` and the versions of the libraries that draw them."""
        digest = hashlib.sha256(self.identity.encode())
        for path in (Path(main), Path(ref)):
            digest.update(path.read_bytes())
        digest.update(json.dumps([question, lam]).encode())
        _add_sources(digest, Path(__file__).parent.glob("*.py"))
        _add_versions(digest, DRAWING_LIBRARIES)
        return digest.hexdigest()[:32]

    def get_pictures(self, key: str, into: Path) -> dict[str, Any] | None:
        """The kept pictures copied into ``into``: name -> file path, a pair of paths, or None; None when any is
        missing or unreadable (they are then drawn again)."""
        kept = self.folder / PICTURES / key
        try:
            manifest = json.loads((kept / MANIFEST).read_text(encoding="utf-8"))
            pictures: dict[str, Any] = {}
            for name, files in manifest.items():
                if files is None:
                    pictures[name] = None
                    continue
                copies = [str(shutil.copyfile(kept / Path(f).name, into / Path(f).name))
                          for f in ([files] if isinstance(files, str) else files)]
                pictures[name] = copies[0] if isinstance(files, str) else tuple(copies)
            return pictures
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError):
            log.warning("ignoring the unreadable kept pictures %s", kept)
            return None

    def put_pictures(self, key: str, pictures: dict[str, Any]) -> None:
        """Keep ``pictures`` (name -> PNG path, a pair of paths, or None) under ``key``; the newest ``KEPT`` are
        kept. A failure to write is logged, never raised."""
        root = self.folder / PICTURES
        try:
            temporary = root / f"{key}.partial"
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
            manifest: dict[str, Any] = {}
            for name, files in pictures.items():
                paths = [] if files is None else [files] if isinstance(files, str) else list(files)
                for path in paths:
                    shutil.copyfile(path, temporary / Path(path).name)
                manifest[name] = None if files is None else (Path(files).name if isinstance(files, str)
                                                             else [Path(f).name for f in files])
            (temporary / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            shutil.rmtree(root / key, ignore_errors=True)
            temporary.rename(root / key)
            folders = [f for f in root.iterdir() if f.is_dir() and not f.name.endswith(".partial")]
            for old in sorted(folders, key=lambda f: f.stat().st_mtime)[:-KEPT]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            log.warning("could not keep the example's pictures in %s", root, exc_info=True)
