"""Baselines trained outside the toolkit (PyKEEN) and evaluated by its evaluator; imported lazily (PyKEEN is heavy)."""
