"""DINO self-distillation pieces (Caron et al. 2021) for pretraining a small prior ViT on radiographs.

The prior of eq. 4 (sec. 3.2) is RAD-DINO in the paper; ``python -m train pretrain-prior`` trains a small
stand-in with the same recipe and saves it in the transformers ``Dinov2Model`` layout.
"""
