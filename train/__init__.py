"""The trainer and tools around it: ``python -m train {synth, fit, evaluate, pretrain-prior}``."""
