"""Suite-wide settings: the tests sign with a key of their own, never the user's."""

from __future__ import annotations

import os
import tempfile

# Every snapshot is signed by default with the per-user key. The suite (and the
# subprocesses it starts, which inherit the environment) uses a key file of its own
# in a temporary directory, created on first use like the real one.
_KEY_DIR = tempfile.mkdtemp(prefix="contsnap-test-key-")
os.environ["CONTSNAP_KEY_FILE"] = os.path.join(_KEY_DIR, "key")
os.environ.pop("CONTSNAP_KEY", None)
os.environ.pop("CONTSNAP_OLD_KEYS", None)
