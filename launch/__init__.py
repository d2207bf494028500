"""Hydra apps that start, watch and resume sweeps: `python -m launch ...`."""
