"""Durable jobs: ``contsnap.run`` drives a checkpointable generator to its end across kills.

`_run` is the job (start or resume, safe points, autosave, roll out on SIGTERM); `_plan`
how it is run again, `_progress` its status line, `_signals` the signals that arrive
before it starts, `_cli` the ``contsnap run / resume / inspect / list`` commands. Where
its checkpoints live is `contsnap._checkpoints` (shared with the actors). Nothing is
imported here; import the module you need.
"""
