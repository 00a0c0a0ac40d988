"""Stands in for a module that is slow to import (torch): records when it was imported."""

import time

time.sleep(0.5)
IMPORTED_AT = time.time()
