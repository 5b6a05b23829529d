"""Pool workers ride the login of the process that handed them the cache: one code in all.

Against the real publickey + TOTP sshd, with real worker processes started
by fork, spawn and forkserver through ``fleche.wrap_executor``: the parent
answers the one code (even when the workers' calls are the first ones),
the workers ask nothing and hold no login, and their results are correct.
"""

from __future__ import annotations

import base64
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import fleche
import pytest
from fleche.call import Call

from fleche_ssh import ParamikoCache
from fleche_ssh.share import owner
from fleche_ssh.share.protocol import OwnerGone
from fleche_ssh.ssh.pool import POOL

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]

METHODS = ["fork", "spawn", "forkserver"]


class Codes:
    """A prompt handler answering one-time codes, counting the questions in its process."""

    def __init__(self, codes) -> None:
        self.codes = codes
        self.asked = 0

    def __getstate__(self) -> dict:
        return {"codes": self.codes, "asked": 0}  # a worker counts its own questions

    def __call__(self, title, instructions, prompts):
        self.asked += 1
        return [self.codes() for _ in prompts]


# -- run in the workers (module level, so that spawned workers can import them) -------------


def use_home(home: str) -> None:
    os.environ["HOME"] = home


def worker_view(cache: ParamikoCache, key: str) -> dict:
    """What a worker sees: the value, and whether it asked or logged in itself."""
    value = cache.load(key).result
    return {"value": value, "asked": cache.prompt.asked, "logins": len(POOL),
            "pid": os.getpid()}


@fleche.fleche
def cube_where(x: int) -> dict:
    return {"cube": x ** 3, "pid": os.getpid()}


# -- tests ----------------------------------------------------------------------------------


@pytest.fixture
def totp_cache(client_home, remote_dir, remote_python):
    made = []

    def build(**keys) -> ParamikoCache:
        handler = Codes(client_home.sshd_totp.codes)
        made.append(ParamikoCache(host="totphost", python=remote_python,
                                  workdir=str(remote_dir), prompt=handler, **keys))
        return made[-1]

    yield build
    for cache in made:
        cache.close()


def _pool(method: str, home, workers: int = 2) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=use_home, initargs=(str(home),))


@pytest.mark.parametrize("method", METHODS)
def test_workers_ask_no_code_and_the_parent_one(totp_cache, client_home, method):
    cache = totp_cache()
    key = cache.save(Call(name="shared", arguments={"m": method}, result=f"via {method}"))
    assert cache.prompt.asked == 1
    with _pool(method, client_home.home) as workers:
        seen = [f.result(timeout=90) for f in
                [workers.submit(worker_view, cache, key) for _ in range(4)]]
    assert {s["value"] for s in seen} == {f"via {method}"}
    assert all(s["asked"] == 0 and s["logins"] == 0 for s in seen), seen
    assert all(s["pid"] != os.getpid() for s in seen)
    assert cache.prompt.asked == 1


@pytest.mark.parametrize("method", METHODS)
def test_wrap_executor_before_the_parent_made_any_call(totp_cache, client_home, method):
    """The first call is a worker's: the parent is asked its one code, the workers nothing."""
    cache = totp_cache()
    with fleche.cache(cache), _pool(method, client_home.home) as executor:
        wrapped = fleche.wrap_executor(executor)
        results = [f.result(timeout=90) for f in
                   [wrapped.submit(cube_where, x) for x in range(3)]]
        assert [r["cube"] for r in results] == [0, 1, 8]
        assert all(r["pid"] != os.getpid() for r in results)
        assert cache.contains(cube_where.fleche.digest(2))
    assert cache.prompt.asked == 1
    assert len(POOL) == 1


def test_dask_workers_ask_no_code(totp_cache, client_home):
    """Dask ``LocalCluster(processes=True)`` through ``fleche.wrap_executor``."""
    import distributed
    cache = totp_cache()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, timeout=60) as client, fleche.cache(cache):
        wrapped = fleche.wrap_executor(client.get_executor())
        results = [f.result(timeout=90) for f in
                   [wrapped.submit(cube_where, x) for x in (4, 5, 6)]]
    assert [r["cube"] for r in results] == [64, 125, 216]
    assert all(r["pid"] != os.getpid() for r in results)
    assert cache.prompt.asked == 1


def test_control_master_no_offers_nothing(make):
    cache = make(control_master="no")
    copy = pickle.loads(pickle.dumps(cache))
    assert getattr(copy, "_share", None) is None


def test_the_secret_is_in_no_repr_config_or_log(totp_cache, client_home, caplog):
    from fleche.config import cache_to_config

    cache = totp_cache()
    with caplog.at_level(logging.DEBUG):
        offer = owner.offer(cache)
        assert offer is not None
        copy = pickle.loads(pickle.dumps(cache))
        with _pool("spawn", client_home.home, workers=1) as workers:
            key = cache.save(Call(name="secret", arguments={}, result=1))
            assert workers.submit(worker_view, copy, key).result(timeout=90)["value"] == 1
    shown = [repr(cache), repr(copy), repr(offer), str(cache.config()),
             str(cache_to_config(cache)), str(cache.info()), caplog.text]
    for text in shown:
        assert offer.secret.hex() not in text
        assert base64.b64encode(offer.secret).decode() not in text
        assert repr(offer.secret) not in text


OWNER = """
import base64, pickle, sys
from fleche_ssh import ParamikoCache
from fleche_ssh.ssh.pool import POOL
cache = ParamikoCache(host="totphost", python=sys.argv[1], workdir=sys.argv[2], prompt="none")
data = pickle.dumps(cache)
print(POOL.offers().listener.address)
print(base64.b64encode(data).decode())
"""


def test_an_owner_that_exited_leaves_nothing_and_its_workers_a_typed_error(
        client_home, remote_dir, remote_python, tmp_path):
    done = subprocess.run([sys.executable, "-c", OWNER, remote_python, str(remote_dir)],
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "HOME": str(client_home.home)})
    socket_path, data = done.stdout.split()
    assert not os.path.exists(socket_path)  # the owner ended: its socket is gone
    orphan = pickle.loads(base64.b64decode(data))
    try:
        with pytest.raises(OwnerGone, match="has exited"):
            orphan.info()
    finally:
        orphan.close()


SINGLE = """
import pickle, threading
from fleche_ssh import ParamikoCache
from fleche_ssh.ssh.pool import POOL
cache = ParamikoCache(host="testhost")
cache.target()
assert POOL.offers() is None
assert not [t for t in threading.enumerate() if t.name.startswith("fleche-ssh-share")]
pickle.dumps(cache)
assert POOL.offers() is not None
print("ok")
"""


def test_nothing_is_started_until_a_cache_is_pickled(client_home):
    done = subprocess.run([sys.executable, "-c", SINGLE], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HOME": str(client_home.home)})
    assert done.stdout.strip() == "ok", done.stderr


def test_workers_ride_the_login_over_the_loopback_backend(totp_cache, client_home, monkeypatch):
    """The Windows backend (loopback TCP, secret file, HMAC both ways), run here on Linux."""
    from fleche_ssh.share import local

    monkeypatch.setenv(local.BACKEND, "loopback")
    owner.stop()  # a holder of this backend, not one an earlier test started
    cache = totp_cache()
    key = cache.save(Call(name="loopback", arguments={}, result="over TCP"))
    with _pool("spawn", client_home.home, workers=1) as workers:
        seen = workers.submit(worker_view, cache, key).result(timeout=90)
    assert seen == {**seen, "value": "over TCP", "asked": 0, "logins": 0}
    assert cache.prompt.asked == 1
    owner.stop()
