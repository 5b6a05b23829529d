"""The log lines for keywords that applied to a host but that fleche-ssh does not act on.

A user whose ``ssh host`` works while fleche-ssh fails, or reaches another
machine, looks here first: each line names the keyword, its value where it
matters, the file and line it came from, and, for the rows of
:data:`~fleche_ssh.config.options.UNHONOURED`, what ``ssh`` would have done.
"""

from __future__ import annotations

import logging

from .options import BY_KEYWORD, NOT_NEEDED, UNHONOURED_BY_KEYWORD
from .sshconfig import STRUCTURE, Resolution

logger = logging.getLogger("fleche_ssh.options")


def log_ignored(host: str, resolution: Resolution) -> None:
    """Log each keyword that applied to *host* but that fleche-ssh does not act on, once.

    The line names the keyword, its value where it matters, and the file
    and line it came from (the first, for a keyword given several times).
    """
    for key, where in resolution.sources.items():
        if key in BY_KEYWORD or key in STRUCTURE:
            continue
        keyword = resolution.spellings.get(key, key)
        value = resolution.first(key) or ""
        row = UNHONOURED_BY_KEYWORD.get(key)
        if key in NOT_NEEDED:
            logger.debug("ssh config for %s: %s: %s is not needed by fleche-ssh, ignored",
                         host, where, keyword)
        elif row is not None and value.lower() not in row.same:
            logger.log(row.level, "ssh config for %s: %s: %s %s is not supported by fleche-ssh, "
                       "ignored; %s", host, where, keyword, value, row.effect)
        else:
            logger.debug("ssh config for %s: %s: %s is not supported by fleche-ssh, ignored",
                         host, where, keyword)
