"""The `sched` command line: `app` holds the group (options, lazy loading, errors, console, queue);
each other module holds one group of commands. Commands are thin: parse, call, render.

Nothing here imports torch or transformers (8-10 s to import), and `sched --help` imports neither
SQLAlchemy nor rich: a command module imports click at the top and the rest inside its commands.
"""

from .app import SchedGroup, cli, main

__all__ = ["SchedGroup", "cli", "main"]

if __name__ == "__main__":
    main()
