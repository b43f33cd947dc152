"""vector_service: LanceDB and embedding generation (being built; see the README's status)."""
