"""Storing: the writer process, file layout and atomic files, the manifest, folder locks, resume;
where final files go (a local folder or object storage, store.target) and object storage's lease."""
