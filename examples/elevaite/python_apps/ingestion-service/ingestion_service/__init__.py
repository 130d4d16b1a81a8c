"""Ingestion service: sources, ingestion jobs, documents and their chunks."""
