"""The run store: runs, metrics and files (`runs`), the jobs table, leases and its location."""

from .leases import RunOwned
from .location import STORE_ENV, resolve_store, store_dir
from .runs import DamagedFileError, RunStore, StoreError, read_safetensors

__all__ = ["STORE_ENV", "DamagedFileError", "RunOwned", "RunStore", "StoreError",
           "read_safetensors", "resolve_store", "store_dir"]
