"""fleet check: the CI gate on migration scripts and schemas."""
