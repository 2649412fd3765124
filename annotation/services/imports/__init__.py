"""Batch import of cell images from a folder, a zip or an upload: validated, content-addressed, reported per file.

batches: checking a source and recording (and queueing) a batch; uploads: where uploaded zips wait;
runner: processing a batch on a few threads; items: one file's rows and blobs, in one transaction.
"""
