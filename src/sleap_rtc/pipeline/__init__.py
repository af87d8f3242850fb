"""Spec-driven pipelines on SLURM: job files, SBATCH scripts, chaining, manifests."""
