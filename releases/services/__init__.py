"""Writes for releases, one module per concern: versions (cutting), archive (the build the task runs),
archive_request (queueing that build), datasheet and zipstream (what the build writes)."""
