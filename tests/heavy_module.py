"""Stands in for a module that is slow to import (torch): records when it was imported, and the CPU
priority (niceness) of the thread that imported it."""

import os
import threading
import time

time.sleep(0.5)
IMPORTED_AT = time.time()
IMPORT_NICENESS = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
