"""Compression techniques, one concern a file: ``prune``, ``quantize`` (QAT), ``distill``."""
