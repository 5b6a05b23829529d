"""Sphinx configuration for the fleche-ssh documentation."""

from __future__ import annotations

import re
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# The configuration tables are rendered from fleche_ssh.config.options (docs/_ext).
sys.path[:0] = [str(_ROOT / "docs" / "_ext"), str(_ROOT)]
_VERSION = re.search(
    r'__version__\s*=\s*"([^"]+)"', (_ROOT / "fleche_ssh" / "_version.py").read_text()
)

project = "fleche-ssh"
author = "fleche-ssh contributors"
copyright = "fleche-ssh contributors"
release = _VERSION.group(1) if _VERSION else "unknown"
version = release

extensions = [
    "autoapi.extension",
    "sphinx.ext.napoleon",
    "fleche_ssh_tables",
]

# The API reference is generated from the source, without importing it.
autoapi_type = "python"
autoapi_dirs = ["../fleche_ssh"]
# A stub beats its module: fleche_ssh/config/fields.pyi spells out the fields
# that fields.py makes from the option rows at import time.
autoapi_file_patterns = ["*.pyi", "*.py"]
autoapi_root = "api"
autoapi_add_toctree_entry = False
autoapi_keep_files = False
autoapi_member_order = "groupwise"
autoapi_options = [
    "members",
    "show-inheritance",
    "show-module-summary",
    "imported-members",
]
# Internal machinery with no user-facing API: the interpreter start-up hook
# and the throwaway demo server.
autoapi_ignore = ["*/_startup.py", "*/demo/*"]

# fleche_ssh.errors re-exports fleche.remote.RemoteConnectionError, which lives
# outside the documented source tree; AutoAPI reports every module importing
# it from there as unresolvable.  The class is documented in fleche itself.
suppress_warnings = ["autoapi.python_import_resolution"]

napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"fleche-ssh {release}"
html_static_path: list[str] = []
exclude_patterns = ["_build"]
