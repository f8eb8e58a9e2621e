"""Where the pretrained parts come from: a local folder, a weights directory or the hub cache; never guessed.

The paper's pretrained parts (sec. 3.3-3.5) are timm's Swin-B (``timm/swin_base_patch4_window12_384.ms_in22k``,
ImageNet-21k), RAD-DINO (``microsoft/rad-dino``) and GPT-2 with its own tokenizer (``gpt2``). A part named by a
hub id is looked for, in this order:

1. the name itself, when it is an existing folder (or, for the image encoder, ``image_encoder_weights``);
2. ``WEIGHTS_DIR/<hub id>/``, where WEIGHTS_DIR is ``--weights-dir`` or ``$DIFFVQA_WEIGHTS_DIR``::

       WEIGHTS_DIR/timm/swin_base_patch4_window12_384.ms_in22k/  model.safetensors, config.json
       WEIGHTS_DIR/microsoft/rad-dino/                         config.json, model.safetensors,
                                                               preprocessor_config.json
       WEIGHTS_DIR/gpt2/                                        config.json, model.safetensors, tokenizer.json
                                                               (or vocab.json + merges.txt), tokenizer_config.json

   exactly what ``hf download <hub id> --local-dir WEIGHTS_DIR/<hub id>`` writes;
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), as ``hf download <hub id>`` leaves it;
4. the hub itself, unless ``HF_HUB_OFFLINE=1``: then a :class:`WeightsNotFoundError` says which files to put
   where.

The config keeps the names as written (a checkpoint does not record this machine's paths); the builders in
``encoders``, ``masks``, ``decoder`` and ``tokenizer`` resolve them when they load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from diffvqa_core.config import DiffVQAConfig

WEIGHTS_DIR_ENV = "DIFFVQA_WEIGHTS_DIR"
TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")  # either one is enough (vocab.json goes with merges.txt)
ALIASES = {"gpt2": ("openai-community/gpt2",)}  # the hub moved GPT-2; a cache may hold it under either id
PART_FILES = {
    "image encoder": "model.safetensors, config.json",
    "prior": "config.json, model.safetensors, preprocessor_config.json",
    "decoder": "config.json, model.safetensors",
    "tokenizer": "tokenizer.json (or vocab.json + merges.txt), tokenizer_config.json",
}


class WeightsNotFoundError(FileNotFoundError):
    """A pretrained part that is on none of the local paths (and the hub is not to be asked)."""


@dataclass(frozen=True)
class PartSource:
    """Where one pretrained part is loaded from.

    Attributes:
        part: "image encoder", "prior", "decoder" or "tokenizer".
        name: the name in the config (hub id or path).
        location: a local file or folder, or the hub id when the library will fetch it.
        origin: "path", "weights dir", "hub cache" or "hub".
    """

    part: str
    name: str
    location: str
    origin: str

    def describe(self) -> str:
        """One line for the log: "decoder gpt2 <- /models/gpt2 (weights dir)"."""
        return f"{self.part} {self.name} <- {self.location} ({self.origin})"


def weights_dir() -> Path | None:
    """The weights directory: ``$DIFFVQA_WEIGHTS_DIR`` (set by ``--weights-dir``), or None."""
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def set_weights_dir(path: str | Path | None) -> None:
    """Sets ``$DIFFVQA_WEIGHTS_DIR`` for this process and the ones it starts (None leaves it as it is).

    Raises:
        WeightsNotFoundError: when ``path`` is not a folder.
    """
    if path is None:
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WeightsNotFoundError(f"--weights-dir {path}: no such folder")
    os.environ[WEIGHTS_DIR_ENV] = str(folder.resolve())


def offline() -> bool:
    """Whether the hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to 1/true)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The hub cache as the hub client computes it: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else its default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _ids(name: str) -> tuple[str, ...]:
    return (name, *ALIASES.get(name, ()))


def _cached_file(hub_id: str, filename: str) -> Path | None:
    """A file of the hub cache's current snapshot of ``hub_id``, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _find_folder(name: str, wanted: tuple[str, ...]) -> tuple[Path, str] | None:
    """The first folder holding one of ``wanted``: the name itself, the weights dir, then the hub cache."""
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return (candidate, "path") if any((candidate / f).is_file() for f in wanted) else None
    root = weights_dir()
    for hub_id in _ids(name):
        if root is not None and any((root / hub_id / f).is_file() for f in wanted):
            return root / hub_id, "weights dir"
    for hub_id in _ids(name):
        for filename in wanted:
            found = _cached_file(hub_id, filename)
            if found is not None:
                return found.parent, "hub cache"
    return None


def _looks_like_hub_id(name: str) -> bool:
    return not Path(name).expanduser().exists() and not name.startswith((".", "/", "~")) and name.count("/") <= 1


def _not_found(part: str, name: str, folder_hint: str | None = None) -> WeightsNotFoundError:
    files = PART_FILES[part]
    if not _looks_like_hub_id(name) or Path(name).expanduser().is_dir():
        return WeightsNotFoundError(f"{part}: {name} holds no {part} files; put {files} there")
    root = weights_dir()
    where = f"{root / name}/" if root else f"WEIGHTS_DIR/{name}/ (with --weights-dir WEIGHTS_DIR)"
    return WeightsNotFoundError(
        f"{part} {name!r} is not on this machine: put {files} in {where}, or download it into the hub cache "
        f"({hub_cache_dir()}) with `hf download {name}`, or name a local folder in the config"
        + (f" ({folder_hint})" if folder_hint else "") + "; see docs/reproducing.md")


def resolve_transformers_part(name: str, part: str) -> PartSource:
    """Where a transformers model (the prior or the decoder) loads from.

    Raises:
        WeightsNotFoundError: nothing local and the hub is off (``HF_HUB_OFFLINE=1``), or a folder without
            weights.
    """
    found = _find_folder(name, TRANSFORMERS_WEIGHT_FILES)
    if found is not None:
        folder, origin = found
        if not (folder / "config.json").is_file():
            raise WeightsNotFoundError(f"{part}: {folder} has weights but no config.json; put "
                                       f"{PART_FILES[part]} there")
        return PartSource(part, name, str(folder), origin)
    if _looks_like_hub_id(name) and not offline():
        return PartSource(part, name, name, "hub")
    raise _not_found(part, name)


def find_tokenizer(name: str) -> PartSource | None:
    """Where a tokenizer named ``name`` (folder or hub id) is on disk, or None (the hub is never asked)."""
    found = _find_folder(name, TOKENIZER_FILES)
    return None if found is None else PartSource("tokenizer", name, str(found[0]), found[1])


def resolve_tokenizer(name: str) -> PartSource:
    """Where GPT-2's tokenizer loads from: on disk, or the hub when allowed.

    Raises:
        WeightsNotFoundError: naming the files and the folder they belong in.
    """
    found = find_tokenizer(name)
    if found is not None:
        return found
    if _looks_like_hub_id(name) and not offline():
        return PartSource("tokenizer", name, name, "hub")
    raise _not_found("tokenizer", name)


def tokenizer_name(config: DiffVQAConfig) -> str | None:
    """The tokenizer a config asks for. A pretrained decoder needs its own tokenizer: left unset or at its default
    (``gpt2``) while the decoder is named elsewhere (``decoder: /models/gpt2``), it is the decoder's own folder;
    a random decoder takes ``tokenizer`` as set (None: the local BPE)."""
    default = DiffVQAConfig.__dataclass_fields__["tokenizer"].default
    if config.decoder_pretrained and (not config.tokenizer or config.tokenizer == default != config.decoder):
        return config.decoder
    return config.tokenizer


def timm_hub_id(model_name: str) -> str | None:
    """The hub id timm fetches ``model_name``'s pretrained weights from (None for unknown names)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model_name)
    except (RuntimeError, ValueError):
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def weights_file_in(path: Path) -> Path | None:
    """``path`` itself when a file, else the first known weights file inside the folder, else None."""
    if path.is_file():
        return path
    return next((path / f for f in TIMM_WEIGHT_FILES if (path / f).is_file()), None)


def resolve_image_encoder(config: DiffVQAConfig) -> PartSource:
    """Where phi's timm backbone loads from: ``image_encoder_weights``, the weights dir or the hub cache.

    ``location`` is a weights file, or the hub id when timm will fetch it itself (online only).

    Raises:
        WeightsNotFoundError: naming the folder and files to provide.
        ValueError: when the folder's timm ``config.json`` names another architecture.
    """
    if config.image_encoder_weights:
        path = Path(config.image_encoder_weights).expanduser()
        file = weights_file_in(path)
        if file is None:
            what = "no such file or folder" if not path.exists() else f"no {' / '.join(TIMM_WEIGHT_FILES)} in it"
            raise WeightsNotFoundError(f"image_encoder_weights {config.image_encoder_weights}: {what}")
        source = PartSource("image encoder", config.image_encoder, str(file), "path")
    else:
        hub_id = timm_hub_id(config.image_encoder) or config.image_encoder
        found = _find_folder(hub_id, TIMM_WEIGHT_FILES)
        if found is None and hub_id != config.image_encoder:
            found = _find_folder(config.image_encoder, TIMM_WEIGHT_FILES)
        if found is None:
            if timm_hub_id(config.image_encoder) and not offline():
                return PartSource("image encoder", config.image_encoder, hub_id, "hub")
            raise _not_found("image encoder", hub_id, "or set image_encoder_weights")
        source = PartSource("image encoder", config.image_encoder, str(weights_file_in(found[0])), found[1])
    check_timm_architecture(Path(source.location).parent / "config.json", config.image_encoder)
    return source


def check_timm_architecture(config_json: Path, model_name: str) -> None:
    """Refuses weights whose timm ``config.json`` (as timm writes it beside them) names another architecture.

    Raises:
        ValueError: naming both architectures.
    """
    try:
        saved = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a bare weights file: timm's loader checks the shapes
    architecture = saved.get("architecture") if isinstance(saved, dict) else None
    wanted = model_name.split(".")[0]
    if isinstance(architecture, str) and architecture.split(".")[0] != wanted:
        raise ValueError(f"the image encoder weights in {config_json.parent} are a {architecture!r}; the config's "
                         f"image_encoder is {model_name!r}")


def pretrained_sources(config: DiffVQAConfig) -> list[PartSource]:
    """Resolves every pretrained part the config loads, before anything is built.

    Returns:
        One PartSource per pretrained part (the tokenizer with the decoder).

    Raises:
        WeightsNotFoundError: listing every missing part at once, each with its folder and files.
    """
    sources, missing = [], []
    steps = []
    if config.image_encoder_pretrained:
        steps.append(lambda: resolve_image_encoder(config))
    if config.prior_pretrained:
        steps.append(lambda: resolve_transformers_part(config.prior, "prior"))
    if config.decoder_pretrained:
        steps.append(lambda: resolve_transformers_part(config.decoder, "decoder"))
        steps.append(lambda: resolve_tokenizer(tokenizer_name(config)))
    for step in steps:
        try:
            sources.append(step())
        except WeightsNotFoundError as error:
            missing.append(str(error))
    if missing:
        raise WeightsNotFoundError("pretrained weights are missing:\n  - " + "\n  - ".join(missing))
    return sources
