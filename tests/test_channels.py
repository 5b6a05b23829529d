"""Several channels on one cache: parallel remote servers sharing the remote storage.

``channels = N`` runs up to N ``python -m fleche remote --serve`` processes
for one cache.  That is only correct when the remote storage is shared
between processes, so this runs the same parallel workload against fleche's
file backend and its SQL (sqlite) call storage and checks that every result
is found again by a fresh single-channel cache.
"""

from __future__ import annotations

import json
import threading

import fleche
import pytest

from fleche_ssh import ParamikoCache

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("fresh_pool")]

STORAGES = {
    "file": lambda root: {"values": {"type": "cloudpickle", "root": f"{root}/values"},
                          "calls": {"type": "cloudpickle", "root": f"{root}/calls"}},
    "sql": lambda root: {"values": {"type": "cloudpickle", "root": f"{root}/values"},
                         "calls": {"type": "sql", "url": f"sqlite:///{root}/calls.db"}},
}


def _toml(table: dict) -> str:
    lines = ["[default]", 'cache = "shared"', "root = true", "", "[shared]"]
    for part, keys in table.items():
        lines += [f"{part}.{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_parallel_channels_share_one_remote_cache(client_home, remote_python, tmp_path, storage,
                                                  pool):
    workdir = tmp_path / "remote"
    workdir.mkdir()
    (workdir / "fleche.toml").write_text(_toml(STORAGES[storage](workdir)))
    computed: list[int] = []

    @fleche.fleche
    def square(n: int) -> int:
        computed.append(n)
        return n * n

    parallel = ParamikoCache(host="testhost", python=remote_python, workdir=str(workdir),
                             channels=4)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            with fleche.cache(parallel):
                for n in range(offset, 40, 8):
                    assert square(n) == n * n
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(computed) == list(range(40))
    assert parallel._conn.idle_channels > 1  # several remote servers answered
    assert len(pool) == 1  # over one login

    single = ParamikoCache(host="testhost", python=remote_python, workdir=str(workdir))
    with fleche.cache(single):
        assert [square(n) for n in range(40)] == [n * n for n in range(40)]
    assert sorted(computed) == list(range(40))  # all 40 served by the remote cache
    parallel.close()
    single.close()
