"""Running jobs on hosts: the worker loop, its runner processes, GPU slots and placement, the reaper, wake-ups, hooks, data-parallel ranks, and the Slurm backend that starts workers as Slurm jobs."""
