"""Evaluation harnesses: ``python -m tsjepa.eval <task> ckpt=... [data=...]``."""
