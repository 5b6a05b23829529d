"""One login shared by a user's processes: where it listens and who may use it.

:mod:`.place` says where (a private directory, one lock per name) and
:mod:`.local` how a process listens and connects, proving at both ends
that the other is this user.
"""
