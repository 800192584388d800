"""Drivers: they move frames between the sans-IO core's parties and nothing else."""
