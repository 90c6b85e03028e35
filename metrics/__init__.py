"""Ranking metrics shared by training (validation) and evaluation (reports): below both."""
