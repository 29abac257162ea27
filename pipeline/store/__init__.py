"""Storing: the writer process, file layout and atomic files, the manifest, folder locks, resume."""
