"""The bridge: Redis pub/sub in, Celery batches out."""
