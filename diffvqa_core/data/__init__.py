"""Benchmark data: the Medical-Diff-VQA reader and the synthetic longitudinal generator."""
