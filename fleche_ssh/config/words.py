"""Words of an ssh_config value, split and quoted as OpenSSH does.

A line of ``~/.ssh/config``, an ``-o Keyword=value`` and an explicit key
all become the same text before they are parsed, so that one set of rules
(those of OpenSSH's ``argv_split``) decides what a value says, whatever
wrote it.
"""

from __future__ import annotations

# What a backslash escapes in a value: anything else keeps its backslash,
# so ``IdentityFile C:\Users\me\.ssh\id_ed25519`` means what it says.
_ESCAPABLE = "'\"\\"


def split_words(text: str) -> list[str]:
    """Split a value into words as OpenSSH's ``argv_split`` does.

    Blanks separate words, single or double quotes group them, ``#`` at the
    start of a word ends the line.  Unlike a shell, a backslash escapes only
    a quote, a backslash or (outside quotes) a blank, because Windows paths
    are full of backslashes.

    Raises:
        ValueError: a quote is not closed.
    """
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        word: list[str] = []
        quote = ""
        while i < n:
            ch = text[i]
            nxt = text[i + 1] if i + 1 < n else ""
            if ch == "\\" and nxt and (nxt in _ESCAPABLE or (not quote and nxt == " ")):
                word.append(nxt)
                i += 1
            elif not quote and ch in " \t":
                break
            elif not quote and ch in "'\"":
                quote = ch
            elif quote and ch == quote:
                quote = ""
            else:
                word.append(ch)
            i += 1
        if quote:
            raise ValueError(f"unterminated {quote} quote")
        words.append("".join(word))
    return words


def join_words(words: list[str]) -> str:
    """The inverse of :func:`split_words`: quote the words that need it."""
    return " ".join(_quote(w) for w in words)


def _quote(word: str) -> str:
    if word and not word.startswith("#") and not any(c in word for c in " \t'\"\\"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
