"""Import each named module alone, in a fresh interpreter state, after ``django.setup()``.

Usage: ``python -m tests.support.import_alone MODULE...`` (from the project root). Exits 1 and prints a
traceback for each module that fails to import; 0 when all import.

A fresh ``python -c`` per module costs ~2.5 s, most of it importing third-party code (the anthropic SDK,
Django, Twisted); for the ~70 modules of chats, desktop and agents that is minutes. So this process
imports third-party libraries only — never the settings nor any project module (checked before
forking) — and forks one child per module. Each child starts with no project module loaded, as a new
interpreter would, runs ``django.setup()`` and imports its one module: an import cycle that only some
import orders hit shows up here.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

PROJECT_PACKAGES = ("agents", "chatdesk", "chats", "desktop")
#: Third-party modules that import without settings; loaded once, before forking.
PRELOAD = (
    "anthropic",
    "celery",
    "channels.generic.websocket",
    "channels_redis.core",
    "daphne.server",
    "django.contrib.admin",
    "django.db.models",
    "PIL.Image",
    "websockets",
    "whitenoise.middleware",
)
PARALLEL = 2


def _project_modules_loaded() -> list[str]:
    return sorted(name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES)


def _child(module: str) -> None:
    """Run in the forked child: never returns."""
    code = 0
    try:
        import django

        django.setup()
        importlib.import_module(module)
    except BaseException:
        print(f"FAIL {module}", flush=True)
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        code = 1
    os._exit(code)


def main(modules: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")
    for name in PRELOAD:
        importlib.import_module(name)
    from django.conf import settings

    loaded = _project_modules_loaded()
    if settings.configured or loaded:
        print(f"A project module was loaded before forking: {loaded or 'the settings'}")
        return 2
    sys.stdout.flush()
    failed: list[str] = []
    running: dict[int, str] = {}
    queue = list(modules)
    while queue or running:
        while queue and len(running) < PARALLEL:
            module = queue.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(module)
            running[pid] = module
        pid, status = os.wait()
        module = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(module)
    if failed:
        print(f"{len(failed)} of {len(modules)} modules failed to import alone: {', '.join(sorted(failed))}")
        return 1
    print(f"{len(modules)} modules imported alone")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
