"""Evaluation: ranking metrics, protocol, baselines and reports."""
