"""Synthetic data generation: prompts -> sampled responses -> reward scores -> filter -> JSONL.

Each stage is a plain function over a batch of rows (``stages.py``); executors only schedule them.
"""
