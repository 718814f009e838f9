"""Where checkpoints live: generations of signed snapshots, and the lease on them.

`_files` keeps them as files next to each other (atomic write, fsync of file and folder,
an ``fcntl`` lock as the lease); `_stores` keeps them under a key of any
`contsnap.stores` store, under its fenced lease. Durable jobs (`contsnap._durable`), actors
and the Celery integration use them; nothing is imported here.
"""
