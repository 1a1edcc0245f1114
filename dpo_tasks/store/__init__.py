from dpo_tasks.store.base import Store, StoreError, VersionNotFound, open_store

__all__ = ["Store", "StoreError", "VersionNotFound", "open_store"]
