"""Keeping the garbage collector off the objects a process holds for good.

A batch or an import makes thousands of objects per chunk, and each time enough of them
survive a young collection, Python runs a full one, which walks every object the process
holds: Django's modules, models, URL patterns and settings, hundreds of thousands of
them. Those live as long as the process, so once they are loaded they are moved to the
collector's permanent generation (gc.freeze) and full collections walk only the work's
own objects. Reference counting frees frozen objects as it frees any other.
"""

import contextlib
import gc


def freeze_live_objects() -> None:
    """Collect the garbage there is, then freeze every object left: for the process's life."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def live_objects_frozen():
    """freeze_live_objects() for the length of the block only (a command run inside a
    longer process, such as the tests'): the objects go back to the collector after it."""
    freeze_live_objects()
    try:
        yield
    finally:
        gc.unfreeze()
