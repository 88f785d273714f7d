"""Launchers: run a matrix's jobs on this machine (local) or on a Slurm cluster (slurm)."""
