"""Serving: the recommender as an MLflow pyfunc, and registry promotion (champion/challenger)."""
