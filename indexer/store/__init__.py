"""The index on disk: SQL schema (the truth), the index folder and its lock, FAISS caches, checking."""
