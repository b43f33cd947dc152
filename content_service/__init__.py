"""content_service: the only process that opens the relational database and the media store.

Layers, each importing only the ones below it (tests/test_layering.py checks):

- api/: the gRPC servicers; each RPC opens one session, calls plain functions, builds its
  proto before the session closes. server.py wires them all, with the edge interceptor.
- resources, plain modules over a session: tenancy, pages, posts, navigation, site_settings,
  chat, clone, search; scope (the tenant filter) and validation (input rules) beside them.
- rooms, for what has threads or state of its own: indexing/ (the write hooks, full-text
  upkeep, the outbox and its dispatcher to vector_service, reconcile) and images/ (image
  records, job leases, the media store).
- db/: engine and sessions, models, migrations, bulk inserts, raw hot reads."""
