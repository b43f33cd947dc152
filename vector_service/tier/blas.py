"""One BLAS thread for the process while a vector server runs.

A tier search is one matrix-vector product over one team's rows (a few hundred microseconds):
the gRPC thread pool is its parallelism. OpenBLAS's own threads (two here, one per core)
would make every such product hand work to a second thread that other calls are using:
measured in the prototype of this tier, the Search RPC took 7.3-8.6 ms with numpy's default
threads and 3.2 ms with one (`make bench` reports the product both ways). The thread count is
global to the process in OpenBLAS, so it is set once when the server starts (threadpoolctl, which
finds whichever BLAS numpy loaded), not per call, which would race with concurrent calls; the
local embedder's products then run on one thread too, as `python -m vector_service` has always
run them (OPENBLAS_NUM_THREADS=1).
"""

from __future__ import annotations

from collections.abc import Callable

from threadpoolctl import threadpool_limits


def one_blas_thread() -> Callable[[], None]:
    """Limits BLAS to one thread in this process; returns what restores the previous limits."""
    limits = threadpool_limits(limits=1, user_api="blas")

    def restore() -> None:
        limits.restore_original_limits()

    return restore
