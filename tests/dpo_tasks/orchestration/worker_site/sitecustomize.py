"""Makes this interpreter (and every subprocess it starts with this PYTHONPATH) an Airflow worker
of the production image: the training stack is not installed, so importing it fails."""

import sys

BLOCKED = ("torch", "transformers", "trl", "peft")


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the Airflow worker has no training stack)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
