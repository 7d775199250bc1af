"""Training: the staged schedule, its callbacks and the run directory."""
