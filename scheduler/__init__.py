"""sched's scheduler: the queue's store, the worker, and the command line (see docs/architecture.md).

Importing this package imports nothing else: `sched --help` and the job runner pay only for the
modules they use.
"""
