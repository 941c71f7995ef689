"""Sequence-mixing primitives. Each op has a plain reference beside its fast paths."""
