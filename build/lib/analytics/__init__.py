"""Analytics domain: configuration, event schemas, models, ingestion, CLI."""
