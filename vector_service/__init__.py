"""vector_service: the gRPC service that embeds texts, keeps their vectors in LanceDB and
searches them, each search filtered to the caller's tenant (docs/vector.md). It is the only
process that opens LanceDB or calls an embedding model.

`api` is the VectorService servicer, `store` the LanceDB tables, `search` vector, full-text and
hybrid search, `embeddings` the model providers, `backup` the VectorBackupService, `authn` who
may call, `errors` the domain errors, `settings`, `server` and `__main__` the wiring.
"""
