"""Training objectives of the paper (sec. 3.6, eq. 2 and 11-18), one small function each.

Total (eq. 18)::

    L = L_lm + L_reg + a_mask (L_mask_main + L_mask_ref) + a_pred (L_pred_main + L_pred_ref)
        + a_gram (L_gram + L_gram_mask) + a_kl L_KoLeo

Decisions where the paper is open (each is a config field, see ``DiffVQAConfig``):

* Gate of L_mask (eq. 12, ``mask_gate``). Figure 1(B) and sec. 1 describe the product of the *encoded
  mask* phi(M) with the image features; eq. 12 writes the mask M itself. Default ``"encoded_mask"``:
  the gate is the token features of phi(M) (eq. 9), which is the only use eq. 9's f_mask has anywhere in
  the paper, and tokens of the same width as f_main can be multiplied element-wise without inventing a
  resampling. ``"pooled_mask"`` offers the eq. 12 reading: M average-pooled onto the token grid.
* Vector spread by KoLeo (eq. 17, ``koleo_vector``). Default ``"masked_main"``: the mean-pooled
  masked-main tokens f_mask_main, i.e. the representation the decoder actually reads, so KoLeo keeps
  different samples' masked evidence apart (sec. 1: "representational separability between samples").
  ``"masked_pair"`` pools main and reference masked tokens together; ``"main"`` pools unmasked f_main.
* Detached targets (``detach_targets``). Default True: the unmasked features f_main / f_ref are the
  targets of L_mask and L_pred under a stop-gradient, as DINO-style objectives treat their teacher.
  Without it the cheapest way to shrink both losses is to collapse the unmasked features toward the
  masked ones (e.g. towards zero), which erases the very evidence the losses try to preserve.

Squared L2 norms of feature differences (eq. 12, 14) are averaged over tokens and channels (MSE), not
summed: a sum over the 144 x 768 entries of a sample is 110,592 times the mean, so at the paper's weight of
0.1 it would drown L_lm, which cannot be the balance the paper reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pose_loss(theta: torch.Tensor, gt_theta: torch.Tensor, image_size: int) -> torch.Tensor:
    """Supervised registration (not in the paper): mean distance, in pixels of the model input, by which the image
    corners stay misplaced after the warp ``theta``, given the generator's pose ``gt_theta`` (the convention of
    ``diffvqa_core.metrics.corner_displacement``: the residual ``gt_theta o theta`` is the identity when perfect).

    Args:
        theta: (B, 2, 3) predicted warp (output -> input coordinates).
        gt_theta: (B, 2, 3) the synthetic pair's pose: reference frame -> main film.
        image_size: side of the model input, to express the distance in pixels.
    """
    theta, gt_theta = theta.float(), gt_theta.float().to(theta.device)
    bottom = torch.tensor([0.0, 0.0, 1.0], device=theta.device).expand(theta.shape[0], 1, 3)
    residual = torch.cat([gt_theta, bottom], 1) @ torch.cat([theta, bottom], 1)  # (B, 3, 3)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
                           device=theta.device).T  # (3, 4) homogeneous
    moved = (residual @ corners)[:, :2]  # (B, 2, 4)
    return ((moved - corners[:2]) * (image_size / 2)).norm(dim=1).mean()


def registration_loss(theta: torch.Tensor, w_smooth: float = 1e-4, w_det: float = 1e-5,
                      w_trans: float = 1e-6) -> torch.Tensor:
    """Near-identity regulariser of the affine warp (eq. 2), averaged over the batch.

    Args:
        theta: (B, 2, 3) affine parameters [A | t].
        w_smooth: weight of ||Theta - I||_F^2.
        w_det: weight of (det A - 1)^2.
        w_trans: weight of ||t||_2^2.

    Returns:
        0-d tensor; exactly 0 at the identity.
    """
    theta = theta.float()  # under bf16 autocast the regulariser stays in fp32 (its terms are ~1e-6)
    eye = torch.eye(2, 3, device=theta.device, dtype=theta.dtype)
    smooth = (theta - eye).pow(2).sum(dim=(1, 2))  # (B,)
    det = theta[:, 0, 0] * theta[:, 1, 1] - theta[:, 0, 1] * theta[:, 1, 0]  # (B,) det of the 2x2 A
    trans = theta[:, :, 2].pow(2).sum(dim=1)  # (B,)
    return (w_smooth * smooth + w_det * (det - 1.0).pow(2) + w_trans * trans).mean()


def image_similarity_loss(registered_main: torch.Tensor, ref: torch.Tensor, size: int) -> torch.Tensor:
    """1 - normalised cross-correlation of the registered main and the reference, averaged over the batch.

    Not in the paper (``alpha_similarity``, default 0). Both images are reduced to grey, blurred by
    antialiased downsampling to ``size`` x ``size`` (the registration network's own view) and compared
    globally: NCC is blind to the exposure differences between visits, and a global score over a
    downsampled image is smooth in the six affine parameters. The images are the model inputs (B, 3, H, W)
    in [0, 1]; the result is a 0-d tensor in [0, 2], 0 for identical images up to gain and offset.
    """
    pair = torch.cat([registered_main.float().mean(1, keepdim=True), ref.float().mean(1, keepdim=True)])
    pair = F.interpolate(pair, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    flat = pair.flatten(1)  # (2B, size * size)
    flat = flat - flat.mean(1, keepdim=True)
    flat = flat / (flat.norm(dim=1, keepdim=True) + 1e-6)
    main, reference = flat.chunk(2)
    return (1.0 - (main * reference).sum(1)).mean()


def language_modeling_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-entropy on the answer tokens only (eq. 11).

    Args:
        logits: (B, T, V) predictions for each answer position.
        targets: (B, T) answer token ids (ending with the end-of-answer token).
        mask: (B, T) 1 for real answer tokens, 0 for padding.

    Returns:
        0-d tensor: mean cross-entropy over the real answer tokens.
    """
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")  # (B*T,)
    weights = mask.flatten().to(loss.dtype)
    return (loss * weights).sum() / weights.sum().clamp_min(1.0)


def mask_consistency_loss(masked: torch.Tensor, full: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Masked features should equal the unmasked ones gated by the mask (eq. 12).

    Args:
        masked: (B, N, C) features of the masked image, phi(M * I).
        full: (B, N, C) features of the unmasked image, phi(I) (detached by the caller if configured).
        gate: (B, N, C) encoded mask phi(M), or (B, N, 1) mask pooled to the token grid.

    Returns:
        0-d tensor: mean squared error.
    """
    return F.mse_loss(masked, gate * full)


def prediction_loss(predicted: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The light head P regresses masked tokens back to the unmasked ones (eq. 13-14).

    Args:
        predicted: (B, N, C) P(f_mask).
        full: (B, N, C) unmasked features (detached by the caller if configured).

    Returns:
        0-d tensor: mean squared error.
    """
    return F.mse_loss(predicted, full)


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """Gram(X) = (1/N) X^ X^T with the rows (tokens) of X L2-normalised (eq. 16).

    Args:
        x: (B, N, C) token features.

    Returns:
        (B, N, N) patch-to-patch similarity.
    """
    x_hat = F.normalize(x, dim=-1)  # (B, N, C)
    return x_hat @ x_hat.transpose(1, 2) / x.shape[1]  # (B, N, N)


def gram_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Longitudinal Gram consistency ||Gram(a) - Gram(b)||_F^2 (eq. 15), averaged over the batch.

    Args:
        a: (B, N, C) tokens of one visit (main).
        b: (B, N, C) tokens of the other visit (reference).

    Returns:
        0-d tensor; 0 when both visits have the same patch-to-patch structure.
    """
    return (gram_matrix(a) - gram_matrix(b)).pow(2).sum(dim=(1, 2)).mean()


def koleo_loss(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo dispersion -1/B sum_i log(min_j ||z^_i - z^_j|| + eps) over the batch (eq. 17).

    The nearest neighbour is chosen without gradient (as in DINOv2) and the distance carries a small
    offset, so duplicated samples give a finite value and finite gradients.

    Args:
        z: (B, C) one vector per sample.
        eps: offset inside the logarithm and the distance.

    Returns:
        0-d tensor; 0 for a batch of one (no neighbour).
    """
    if z.shape[0] < 2:
        return z.sum() * 0.0
    z_hat = F.normalize(z.float(), dim=-1, eps=eps)  # (B, C)
    with torch.no_grad():
        similarity = z_hat @ z_hat.T  # (B, B)
        similarity.fill_diagonal_(-math.inf)
        neighbour = similarity.argmax(dim=1)  # (B,)
    distance = F.pairwise_distance(z_hat, z_hat[neighbour], eps=eps)  # (B,)
    return -torch.log(distance + eps).mean()


def lambda_schedule(progress: float, start: float = 1.0, end: float = 0.5) -> float:
    """Fusion weight lambda of eq. 7 along training: a half cosine from ``start`` to ``end``.

    Args:
        progress: fraction of training done, clipped to [0, 1].
        start: lambda at progress 0 (paper: 1.0, the DINO prior alone).
        end: lambda at progress 1 (paper: 0.5).

    Returns:
        lambda; 1.0, 0.75, 0.5 at progress 0, 0.5, 1 with the paper's values.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
