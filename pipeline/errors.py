"""Errors in a job's inputs: retrying cannot fix them, so a queue fails such a job at once.

`InputError` is the base: a data file that is missing or malformed (`pipeline.data.DataError`), a
model that cannot be found (`pipeline.models.ModelNotFoundError`), params that cannot work together.
Crashes, out-of-memory errors and lost workers are not input errors: those may go away.
"""


class InputError(ValueError):
    """Something the job was given is wrong; the message names the file, field or model."""


class ModelNotFoundError(InputError):
    """A model name or path could not be loaded (unknown hub name, no network, bad folder)."""
