"""Job discovery: which cgroups are jobs (Slurm, Kubernetes pods, containers, services, exec)."""
