"""Durable jobs on engines users already run: `contsnap.integrations.celery`.

Each integration is a thin layer on `contsnap.run`'s machinery and the stores:
the engine delivers work, contsnap keeps where each job is.
"""
