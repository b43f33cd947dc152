"""The store's tuning, in one record that server.store_options fills from VectorSettings (its
own module so that every part of the store can take it without importing another part)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StoreOptions:
    index_threshold_rows: int = 50_000
    index_partition_rows: int = 4096
    nprobes: int = 40
    refine_factor: int = 5
    maintenance_writes: int = 100
    maintenance_seconds: float = 30.0
    # LanceDB's storage_options (object-store endpoint, credentials); empty for a local folder.
    storage: dict[str, str] = field(default_factory=dict)
