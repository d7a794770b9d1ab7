"""Experiment configs (ml-collections), one file per paper setting."""
