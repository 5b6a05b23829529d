"""ParamikoCache travels to other processes, and forked children never touch the parent's link.

The stock SshCache cannot be pickled (it holds a lock and a subprocess), so
``fleche.wrap_executor`` cannot carry it into process-pool workers; a
ParamikoCache pickles as its configuration and connects again where it lands:
through the login of the process that pickled it (tests/test_share_pools.py),
or, with ``control_master = "no"``, with a login of its own, as here.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import fleche
import pytest
from fleche.call import Call

from fleche_ssh import ParamikoCache
from fleche_ssh.ssh.pool import POOL

pytestmark = pytest.mark.timeout(90)

MISSING = "0" * 64


@pytest.fixture
def cache(make):
    return make()


# -- run in worker processes (module level, so that spawned workers can import them) ------


def use_home(home: str) -> None:
    """Worker initializer: the throwaway $HOME whose ~/.ssh reaches testhost."""
    os.environ["HOME"] = home


def remote_view(cache: ParamikoCache, key: str) -> dict:
    """What a worker sees of the remote cache, and of its own connection pool."""
    pooled_before = len(POOL)
    info = cache.info()
    transport = POOL.get(cache.target()).transport
    return {
        "pooled_before": pooled_before,
        "remote_pid": info["pid"],
        "worker_pid": os.getpid(),
        "local_port": transport.sock.getsockname()[1],
        "value": cache.load(key).result,
    }


def report_to(queue, cache: ParamikoCache, key: str) -> None:
    try:
        queue.put(remote_view(cache, key))
    except BaseException as e:
        queue.put({"error": repr(e)})


@fleche.fleche
def square_where(x: int) -> dict:
    return {"square": x * x, "pid": os.getpid()}


# -- pickling ---------------------------------------------------------------------------


def test_pickles_as_its_configuration_without_connecting(make, pool):
    cache = make(workdir="~/work", setup_commands=["module load python"], port=2222,
                 identity_file="~/.ssh/id_ed25519", channels=3)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy == cache
    assert copy.config() == cache.config()
    assert copy.identity_file == ("~/.ssh/id_ed25519",)
    assert len(pool) == 0


def test_a_connected_cache_pickles_and_the_copy_has_its_own_server(cache):
    before = cache.info()["pid"]
    copy = pickle.loads(pickle.dumps(cache))
    assert copy == cache
    try:
        assert copy.info()["pid"] != before
    finally:
        copy.close()
    assert cache.info()["pid"] == before


# -- process pools ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_process_pool_worker_reaches_the_server(make, client_home, method, pool):
    cache = make(control_master="no")
    key = cache.save(Call(name="pool", arguments={"x": 1}, result="from the parent"))
    parent_pid = cache.info()["pid"]
    parent_port = pool.get(cache.target()).transport.sock.getsockname()[1]

    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(1, mp_context=context, initializer=use_home,
                             initargs=(str(client_home.home),)) as workers:
        seen = workers.submit(remote_view, cache, key).result(timeout=60)

    assert seen["value"] == "from the parent"
    assert seen["worker_pid"] != os.getpid()
    assert seen["pooled_before"] == 0
    assert seen["remote_pid"] != parent_pid
    assert seen["local_port"] != parent_port
    assert cache.info()["pid"] == parent_pid


def test_wrap_executor_runs_in_a_worker_and_caches_remotely(cache, client_home):
    context = multiprocessing.get_context("spawn")
    with fleche.cache(cache):
        with ProcessPoolExecutor(1, mp_context=context, initializer=use_home,
                                 initargs=(str(client_home.home),)) as executor:
            pool = fleche.wrap_executor(executor)
            computed = pool.submit(square_where, 12).result(timeout=60)
        assert computed["square"] == 144
        assert computed["pid"] != os.getpid()

        assert cache.contains(square_where.fleche.digest(12))
        # Served from the remote cache: the parent gets the worker's answer.
        assert square_where(12) == computed


# -- fork safety ------------------------------------------------------------------------


def test_forked_child_never_uses_the_parents_transport(cache, pool):
    key = cache.save(Call(name="fork", arguments={"x": 2}, result="inherited"))
    parent_pid = cache.info()["pid"]
    parent_port = pool.get(cache.target()).transport.sock.getsockname()[1]

    # The child inherits this very cache object, its open channel and the pool.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=report_to, args=(queue, cache, key))
    child.start()
    try:
        seen = queue.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert "error" not in seen, seen["error"]
    assert seen["pooled_before"] == 0
    assert seen["value"] == "inherited"
    assert seen["remote_pid"] != parent_pid
    assert seen["local_port"] != parent_port

    # The parent's channel and transport still work, undisturbed by the child.
    assert child.exitcode == 0
    assert cache.info()["pid"] == parent_pid
    assert cache.contains(MISSING) is False
    assert cache.load(key).result == "inherited"
