"""Metadata store, FAISS vectors and the index folder."""
