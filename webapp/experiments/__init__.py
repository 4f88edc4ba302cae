"""Experiments and their seasons."""
