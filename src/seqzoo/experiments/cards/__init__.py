"""Built-in experiment cards, one module per paper; importing this package registers them.

Every module in this package is imported (in name order), so a new card registers by existing: no list to
edit, and cards written side by side never touch a shared file.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
