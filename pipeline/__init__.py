"""ML code for the sched workload: data loading, tokenization cache, losses, metrics, training.

Knows nothing of queues (never imports ``scheduler`` or ``jobs``). Importing ``pipeline`` and its
light modules (``data``, ``config``, ``hooks``, ``metrics``) does not import torch or transformers,
which cost seconds; ``training``, ``models``, ``tokenizers``, ``losses`` do, so import them where the
training actually happens (inside the worker's job process). Hence no re-exports here.
"""
