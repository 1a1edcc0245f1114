"""Run gcp-storage-emulator with GCS's write preconditions: `python gcs_emulator.py PORT BUCKET`.

gcp-storage-emulator (2026.7.19) ignores `ifGenerationMatch`, which is the one
GCS feature a safe `LATEST` rewrite depends on. This launcher adds it the way
the real JSON API behaves (https://cloud.google.com/storage/docs/request-preconditions):
a write whose `ifGenerationMatch` differs from the live object's generation
(0 = "must not exist") is refused with 412 `conditionNotMet` and nothing is
written. The emulator serves one request at a time, so check-and-write is atomic
here as it is in GCS. Everything else is the unmodified emulator.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from urllib.parse import parse_qs, urlparse

from gcp_storage_emulator import server
from gcp_storage_emulator.storage import Storage

_request = threading.local()


class PreconditionFailed(Exception):
    pass


_orig_handle = server.Router.handle
_orig_create_file = Storage.create_file


def _handle(self, method):
    query = parse_qs(urlparse(self._request_handler.path).query)
    _request.if_generation_match = query.get("ifGenerationMatch", [None])[0]
    try:
        _orig_handle(self, method)
    except PreconditionFailed as exc:
        body = json.dumps({"error": {"code": 412, "message": str(exc), "errors": [{"reason": "conditionNotMet", "message": str(exc)}]}}).encode()
        handler = self._request_handler
        handler.send_response(412, "Precondition Failed")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    finally:
        _request.if_generation_match = None


def _create_file(self, bucket_name, file_name, content, file_obj, file_id=None):
    expected = getattr(_request, "if_generation_match", None)
    if expected is not None:
        live = self.objects.get(bucket_name, {}).get(file_name)
        generation = int(live["generation"]) if live else 0
        if int(expected) != generation:
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold.")
    return _orig_create_file(self, bucket_name, file_name, content, file_obj, file_id)


server.Router.handle = _handle
Storage.create_file = _create_file

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()
