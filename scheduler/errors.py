"""Errors a user can act on. The message is the whole story: the CLI prints it as one line."""


class SchedError(Exception):
    """Base of every error sched reports to the user without a traceback."""


class NotFound(SchedError):
    """No job, study or file by that name."""


class InvalidTransition(SchedError):
    """The job is not in a state that allows this change (someone else may have changed it)."""


class PlanError(SchedError):
    """A queue file or job spec is invalid; nothing was submitted."""


class DatabaseUnreachable(SchedError):
    """The queue's database could not be opened (down, refusing connections, its disk failing)."""
