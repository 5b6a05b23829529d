"""One-time codes for the TOTP server, from the real ``oathtool``, never one pam_oath refuses.

pam_oath refuses a code that was already used, or one older than the last
used one, so :class:`TotpCodes` hands out a fresh code per login.
"""

from __future__ import annotations

import time

from .processes import run_tool

TOTP_WINDOW = 5
TOTP_STEP = 30


def totp_code(secret_hex: str, *, at: float | None = None) -> str:
    """The 6-digit TOTP code for *secret_hex* now (or at unix time *at*), via ``oathtool``."""
    argv = ["oathtool", "--totp", "--digits=6"]
    if at is not None:
        argv.append(f"--now=@{int(at)}")
    argv.append(secret_hex)
    return run_tool(argv, timeout=10).strip()


class TotpCodes:
    """Hands out TOTP codes pam_oath will accept, one fresh code per login.

    pam_oath rejects a replayed code and any code older than the last accepted
    one, so consecutive logins inside one 30 s step need codes from later steps
    (accepted within ``window`` steps).  When the lead would exceed the window,
    this waits (bounded, < one step) for real time to catch up.
    """

    def __init__(self, secret_hex: str, *, window: int = TOTP_WINDOW, step: int = TOTP_STEP):
        self.secret_hex = secret_hex
        self.window = window
        self.step = step
        self._last_step: int | None = None

    def __call__(self) -> str:
        now_step = int(time.time()) // self.step
        want = now_step if self._last_step is None else max(now_step, self._last_step + 1)
        if want - now_step >= self.window:
            # Too far ahead of the clock: sleep into the next step.
            time.sleep(self.step - time.time() % self.step + 0.1)
            now_step = int(time.time()) // self.step
            want = max(now_step, self._last_step + 1)
        self._last_step = want
        # Middle of the step, so rounding never lands in a neighbour.
        return totp_code(self.secret_hex, at=want * self.step + self.step // 2)

    def current(self) -> str:
        """The plain current code (may be a replay if a login already used it)."""
        return totp_code(self.secret_hex)

    def wrong(self) -> str:
        """A 6-digit code that is not valid anywhere in the window."""
        now_step = int(time.time()) // self.step
        valid = {
            totp_code(self.secret_hex, at=(now_step + d) * self.step + self.step // 2)
            for d in range(-self.window - 1, self.window + 2)
        }
        for n in range(1000000):
            candidate = f"{(123456 + n * 7919) % 1000000:06d}"
            if candidate not in valid:
                return candidate
        raise AssertionError("unreachable")
