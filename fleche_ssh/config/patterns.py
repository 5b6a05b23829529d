"""OpenSSH's host patterns: ``*`` and ``?`` wildcards, ``!`` negation, comma lists.

``Host`` and ``Match`` lines, known_hosts names and ``@cert-authority``
lines all use these, so there is one implementation for all of them.
"""

from __future__ import annotations


def _pattern_match(pattern: str, text: str) -> bool:
    """OpenSSH's ``match_pattern``: ``*`` and ``?`` wildcards, case-sensitive."""
    p, t = pattern, text
    # Iterative wildcard matching with backtracking on the last '*'.
    pi = ti = 0
    star, mark = -1, 0
    while ti < len(t):
        if pi < len(p) and p[pi] in ("?", t[ti]):
            pi += 1
            ti += 1
        elif pi < len(p) and p[pi] == "*":
            star, mark = pi, ti
            pi += 1
        elif star != -1:
            pi, mark = star + 1, mark + 1
            ti = mark
        else:
            return False
    while pi < len(p) and p[pi] == "*":
        pi += 1
    return pi == len(p)


def match_pattern_list(patterns: list[str], text: str, *, fold_case: bool = True) -> bool:
    """True when *text* matches a positive pattern and no negated (``!``) one.

    OpenSSH compares host names case-insensitively (known_hosts, ``Match
    host``, ``Match originalhost``) but ``Host`` lines, ``Match user`` and
    ``Match localuser`` case-sensitively: ``Host Login*`` does not apply to
    ``ssh login1``.
    """
    if fold_case:
        patterns, text = [p.lower() for p in patterns], text.lower()
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern_match(pattern[1:], text):
                return False
        elif _pattern_match(pattern, text):
            matched = True
    return matched
