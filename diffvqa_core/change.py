"""Change encoder (not in the paper): early fusion of the registered pixel pair into a change map and finding tokens.

The paper's adaptive mask F (eq. 5-6) reads phi's tokens of each visit separately, and the decoder reads the two
visits' tokens side by side (eq. 10), so a change must be found by comparing two token sequences that phi
encoded independently. On our synthetic benchmark that never worked at a CPU budget: F ranked unchanged pixels
above changed ones (AUROC 0.22) and the answers barely depended on the prior film. What did work, in a quick
trial, was early fusion: the reference, the registered main and their difference as three channels of one small
CNN, with the change mask as a dense target (pixel AUROC 0.98 after 100 steps).

This module is that network:

- input: both visits at ``input_size``, grey, each standardised (zero mean, unit variance: exposure differs
  between visits), stacked with their difference -> (B, 3, S, S);
- a 4-stage CNN (stride 2 each) -> a dense change logit map at stride 4 (the adaptive mask F) and a token grid
  at stride 16;
- K + 1 learned queries (one per labelled finding and one for the pair) read the token grid through a small
  transformer decoder -> K + 1 change tokens, which the answer decoder reads as its second image slot;
- linear heads on those tokens: per finding, present in each visit, level in each visit, location, type and
  its change (unchanged / added / missing / level); per pair, any change and the view. They are trained from
  the synthetic generator's ground truth (``diffvqa_core.data.finding_labels``) and make the tokens carry
  what a difference answer has to say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffvqa_core.data.finding_labels import (BACKWARDS_CHANGES, BACKWARDS_COLUMNS, CHANGES, FINDING_COLUMNS,
                                              HEAD_SIZES, IGNORE, LABELLED_FINDINGS, LOCATIONS, PAIR_COLUMNS,
                                              TYPES)
from diffvqa_core.data.findings import CATALOGUE
from diffvqa_core.data.vocabulary import LEVEL_WORDS


WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "change_encoder.json"


@dataclass
class ChangeEncoderConfig:
    """Shape of a :class:`ChangeEncoder` (stored beside its weights by ``python -m train pretrain-change``)."""

    input_size: int = 192  # side at which the pair is read
    widths: tuple[int, ...] = (32, 64, 128, 192)  # channels of the four stride-2 stages
    token_width: int = 192  # width of the change tokens
    query_layers: int = 2  # transformer decoder layers reading the token grid
    heads: int = 4
    # The queries also read the stride-8 grid (4x as many tokens): small findings (a new nodule) are a few
    # pixels across at 128 px, and the stride-16 grid alone left them unnamed (MODEL_CARD.md).
    multiscale_tokens: bool = False
    findings: tuple[str, ...] = field(default_factory=lambda: LABELLED_FINDINGS)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        self.findings = tuple(self.findings)
        if len(self.widths) != 4:
            raise ValueError(f"widths must name the 4 stages' channels, got {self.widths}")
        if self.input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {self.input_size}")


@dataclass
class ChangeOutput:
    """What the change encoder sees in a pair.

    Attributes:
        mask_logits: (B, 1, S/4, S/4) change logits on the reference frame.
        tokens: (B, K + 1, C) one token per labelled finding, then the pair token.
        finding_logits: column -> (B, K, classes) (binary columns: (B, K, 1)).
        pair_logits: column -> (B, classes).
    """

    mask_logits: torch.Tensor
    tokens: torch.Tensor
    finding_logits: dict[str, torch.Tensor]
    pair_logits: dict[str, torch.Tensor]


def _stage(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.GroupNorm(8, out_ch), nn.GELU(),
        nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.GroupNorm(8, out_ch), nn.GELU(),
    )


def standardise(gray: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) -> zero mean, unit variance per image (exposure differs between visits)."""
    mean = gray.mean(dim=(2, 3), keepdim=True)
    std = gray.std(dim=(2, 3), keepdim=True)
    return (gray - mean) / (std + 1e-3)


class ChangeEncoder(nn.Module):
    """Early-fusion change network (see the module docstring).

    Args:
        config: its shape.
    """

    def __init__(self, config: ChangeEncoderConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.stages = nn.ModuleList([_stage(3, widths[0])] + [_stage(a, b) for a, b in zip(widths, widths[1:])])
        self.mask_lateral = nn.Conv2d(widths[1], 64, 1)
        self.mask_top = nn.Conv2d(widths[3], 64, 1)
        self.mask_head = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 1, 1))
        grid = config.input_size // 16
        width = config.token_width
        self.token_proj = nn.Linear(widths[3], width)
        self.positions = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        if config.multiscale_tokens:
            self.fine_token_proj = nn.Linear(widths[2], width)
            self.fine_positions = nn.Parameter(torch.randn(1, 4 * grid * grid, width) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, len(config.findings) + 1, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, config.heads, dim_feedforward=2 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.query_decoder = nn.TransformerDecoder(layer, config.query_layers, norm=nn.LayerNorm(width))
        # One linear head per label column, in FINDING_COLUMNS / PAIR_COLUMNS order (a ModuleDict cannot hold "type").
        self.finding_heads = nn.ModuleList([nn.Linear(width, HEAD_SIZES[c]) for c in FINDING_COLUMNS])
        self.pair_heads = nn.ModuleList([nn.Linear(width, HEAD_SIZES[c]) for c in PAIR_COLUMNS])

    @property
    def num_tokens(self) -> int:
        """K + 1: one token per labelled finding and one for the pair."""
        return len(self.config.findings) + 1

    def pair_input(self, ref: torch.Tensor, registered_main: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) visits in [0, 1] -> (B, 3, S, S): standardised reference, main and their difference."""
        size = self.config.input_size
        gray = torch.cat([ref.mean(1, keepdim=True), registered_main.mean(1, keepdim=True)])  # (2B, 1, H, W)
        if gray.shape[-1] != size or gray.shape[-2] != size:
            gray = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        ref_z, main_z = standardise(gray).chunk(2)
        return torch.cat([ref_z, main_z, main_z - ref_z], dim=1)

    def forward(self, ref: torch.Tensor, registered_main: torch.Tensor) -> ChangeOutput:
        """Reads a registered pair: (B, 3, H, W) each, in [0, 1], the main already on the reference frame."""
        x = self.pair_input(ref, registered_main)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        stride4, stride8, stride16 = features[1], features[2], features[3]  # (B, w_i, S/4, S/4) ... (S/16)
        top = F.interpolate(self.mask_top(stride16), size=stride4.shape[-2:], mode="bilinear", align_corners=False)
        mask_logits = self.mask_head(F.gelu(self.mask_lateral(stride4) + top))  # (B, 1, S/4, S/4)
        grid = self.token_proj(stride16.flatten(2).transpose(1, 2)) + self.positions  # (B, N, C)
        if self.config.multiscale_tokens:
            fine = self.fine_token_proj(stride8.flatten(2).transpose(1, 2)) + self.fine_positions  # (B, 4N, C)
            grid = torch.cat([grid, fine], dim=1)
        # repeat, not expand: a copy, since torch's FLOP counter cannot hook a view of a parameter made without grad
        tokens = self.query_decoder(self.queries.repeat(x.shape[0], 1, 1), grid)  # (B, K + 1, C)
        finding_tokens, pair_token = tokens[:, :-1], tokens[:, -1]
        return ChangeOutput(
            mask_logits, tokens,
            {c: head(finding_tokens) for c, head in zip(FINDING_COLUMNS, self.finding_heads)},
            {c: head(pair_token) for c, head in zip(PAIR_COLUMNS, self.pair_heads)},
        )


def read_both_ways(encoder: ChangeEncoder, ref: torch.Tensor, registered_main: torch.Tensor) -> ChangeOutput:
    """The pair read forwards and backwards, the heads' logits averaged (not in the paper).

    Backwards, the registered main is the reference and the reference the main; its logits are mapped back
    (presence and levels trade places, "added" and "missing" trade places) and averaged with the forward ones.
    The type head (the main visit's type) and everything else (change map, tokens) stay the forward reading's, so
    the masks and the decoder's input are those of a plain forward pass. Worth it only for an encoder trained on
    pairs read both ways (``pretrain-change --reverse-fraction``): on 300 fresh phantom pairs it raised the heads'
    change F1 from 0.57 to 0.65 (MODEL_CARD.md).
    """
    forward = encoder(ref, registered_main)
    backward = encoder(registered_main, ref)
    findings = {}
    for column, logits in forward.finding_logits.items():
        if column == "type":
            findings[column] = logits
            continue
        mirrored = backward.finding_logits[BACKWARDS_COLUMNS.get(column, column)]
        if column == "change":
            mirrored = mirrored[..., list(BACKWARDS_CHANGES)]
        findings[column] = (logits + mirrored) / 2
    pair = {column: (logits + backward.pair_logits[column]) / 2 for column, logits in forward.pair_logits.items()}
    return ChangeOutput(forward.mask_logits, forward.tokens, findings, pair)


def load_change_encoder(directory: str | Path) -> ChangeEncoder:
    """A change encoder written by ``python -m train pretrain-change`` (its shape JSON and safetensors weights).

    Raises:
        FileNotFoundError: when either file is missing (naming it).
    """
    from safetensors.torch import load_model

    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a change encoder (python -m train pretrain-change): "
                                    f"{name} is missing")
    encoder = ChangeEncoder(ChangeEncoderConfig(**json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))))
    load_model(encoder, str(directory / WEIGHTS_FILE), strict=True)
    return encoder


def change_map(mask_logits: torch.Tensor, size: int) -> torch.Tensor:
    """The change probability map at the image's side: (B, 1, h, w) logits -> (B, 1, size, size) in [0, 1]."""
    return torch.sigmoid(F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False))


def change_mask_loss(mask_logits: torch.Tensor, change_mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the change logits against the ground-truth change mask, area-pooled to their grid.

    Args:
        mask_logits: (B, 1, h, w).
        change_mask: (B, H, W) or (B, 1, H, W) in {0, 1}, reference frame.
    """
    target = change_mask if change_mask.ndim == 4 else change_mask.unsqueeze(1)
    target = F.adaptive_avg_pool2d(target.to(mask_logits.dtype), mask_logits.shape[-2:])
    return F.binary_cross_entropy_with_logits(mask_logits, target)


# Relative weight of a label column in the mean (others 1): what changed is what a difference answer says.
LABEL_WEIGHTS = {"change": 3.0}


def change_label_loss(output: ChangeOutput, finding_labels: torch.Tensor, pair_labels: torch.Tensor) -> torch.Tensor:
    """Weighted mean over the label columns of each column's loss (BCE for binary columns, cross-entropy
    otherwise; ``LABEL_WEIGHTS``).

    Args:
        output: the change encoder's output.
        finding_labels: (B, K, len(FINDING_COLUMNS)) int64 from ``finding_labels.encode_pair`` (``IGNORE`` = skip).
        pair_labels: (B, len(PAIR_COLUMNS)) int64.
    """
    terms, weights = [], []
    columns = [(c, output.finding_logits[c], finding_labels[..., i]) for i, c in enumerate(FINDING_COLUMNS)]
    columns += [(c, output.pair_logits[c], pair_labels[:, i]) for i, c in enumerate(PAIR_COLUMNS)]
    for name, logits, target in columns:
        keep = target != IGNORE
        if not bool(keep.any()):
            continue
        if logits.shape[-1] == 1:
            terms.append(F.binary_cross_entropy_with_logits(logits.squeeze(-1)[keep], target[keep].to(logits.dtype)))
        else:
            terms.append(F.cross_entropy(logits[keep], target[keep]))
        weights.append(LABEL_WEIGHTS.get(name, 1.0))
    if not terms:  # nothing stated for this batch (e.g. answers that say nothing about the findings)
        return output.finding_logits["change"].sum() * 0.0
    weight = torch.tensor(weights, dtype=terms[0].dtype, device=terms[0].device)
    return (torch.stack(terms) * weight).sum() / weight.sum()


def _best(logits: np.ndarray, allowed: list[int]) -> int:
    return allowed[int(np.argmax(logits[allowed]))]


@torch.no_grad()
def read_findings(output: ChangeOutput, unchanged_below: float | torch.Tensor | None = None) -> np.ndarray:
    """The change encoder's reading of each pair as label rows (B, K, 7) (``finding_labels.decode_pair`` reads
    them back into findings): the change head decides added / missing / level / unchanged (its most probable
    class; with ``unchanged_below`` (one threshold, or one per pair), "unchanged" exactly when its probability is
    at least that, else the most probable of the other three), the presence heads
    decide whether an unchanged finding is there, and levels, locations and types are the best of the words
    the generator allows for that finding (a level change picks the best pair of two different levels).
    """
    logits = {c: output.finding_logits[c].float().cpu().numpy() for c in FINDING_COLUMNS}
    if unchanged_below is not None:
        change = output.finding_logits["change"].float().cpu().clone()  # never the output itself
        below = torch.as_tensor(unchanged_below, dtype=change.dtype)
        below = below.reshape(-1, 1) if below.ndim else below  # one per pair: (B, 1) against (B, K)
        unchanged = torch.softmax(change, dim=-1)[..., CHANGES.index("unchanged")] >= below
        forced = torch.full_like(change, float("-inf"))
        forced[..., CHANGES.index("unchanged")] = 0.0
        change[..., CHANGES.index("unchanged")] = float("-inf")
        logits["change"] = torch.where(unchanged[..., None], forced, change).numpy()
    batch, count = logits["change"].shape[:2]
    rows = np.full((batch, count, len(FINDING_COLUMNS)), IGNORE, dtype=np.int64)
    for k, name in enumerate(LABELLED_FINDINGS):
        spec = CATALOGUE[name]
        levels = [LEVEL_WORDS.index(word) for word in spec.levels]
        locations = [LOCATIONS.index(word) for word in spec.locations]
        types = [TYPES.index(word) for word in ("",) + spec.types]
        for b in range(batch):
            change = CHANGES[int(np.argmax(logits["change"][b, k]))]
            if change == "level" and len(levels) < 2:
                change = "unchanged"
            present = float(logits["present_ref"][b, k, 0] + logits["present_main"][b, k, 0]) > 0.0
            ref_there, main_there = {"added": (False, True), "missing": (True, False),
                                     "level": (True, True)}.get(change, (present, present))
            row = rows[b, k]
            row[0], row[1], row[6] = ref_there, main_there, CHANGES.index(change)
            if levels:
                ref_level, main_level = logits["level_ref"][b, k], logits["level_main"][b, k]
                if change == "level":
                    pairs = [(a, c) for a in levels for c in levels if a != c]
                    row[2], row[3] = max(pairs, key=lambda ac: ref_level[ac[0]] + main_level[ac[1]])
                else:
                    same = _best(ref_level + main_level, levels) if change == "unchanged" else None
                    if ref_there:
                        row[2] = same if same is not None else _best(ref_level, levels)
                    if main_there:
                        row[3] = same if same is not None else _best(main_level, levels)
            if (ref_there or main_there) and locations:
                row[4] = _best(logits["location"][b, k], locations)
            if main_there:
                row[5] = _best(logits["type"][b, k], types)
    return rows
