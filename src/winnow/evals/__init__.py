"""Prompt evaluation and comparison: templates x models over a dataset, scored, in one table."""
