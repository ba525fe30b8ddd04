"""Kubeflow pipeline components of ragtune: one folder per step, logic importable, a thin component.py each."""
