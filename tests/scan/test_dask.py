"""The same scan on a Dask cluster (a LocalCluster started here): rows identical to the serial scan."""
from __future__ import annotations

import pytest

from quantcore.io.checkpoint import open_checkpoint
from quantcore.scan import scan
from quantcore.schemes import parse_schemes

from .conftest import run_cli


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is the optional 'scan' extra")
    import os
    saved = dict(os.environ)  # LocalCluster exports MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS, ... to this process
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit="1GiB")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
def test_dask_rows_equal_serial_rows(sharded, client, monkeypatch):
    monkeypatch.setattr("quantcore.scan.SEGMENT_ELEMENTS", 256)   # many units per tensor
    ckpt = open_checkpoint([sharded[0]])
    schemes = parse_schemes("q8_0,q4_0,int4-g128,nvfp4,int8-tensor")
    serial, _ = scan(ckpt, schemes, chunk_mb=0.002)
    on_dask, _ = scan(ckpt, schemes, dask=client, chunk_mb=0.002)
    assert on_dask == serial


@pytest.mark.slow
def test_cli_dask_address(sharded, client, tmp_path):
    addr = client.scheduler.address
    code, out, err = run_cli("scan", sharded[0], "--dask", addr, "--schemes", "q4_0", "--out", tmp_path / "d",
                             "--no-progress")
    assert code == 0, err
    code2, out2, _ = run_cli("scan", sharded[0], "--schemes", "q4_0", "--out", tmp_path / "s", "--no-progress")
    assert (tmp_path / "d" / "results.csv").read_text() == (tmp_path / "s" / "results.csv").read_text()
