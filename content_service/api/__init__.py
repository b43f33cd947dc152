"""gRPC servicers: each RPC opens one session, calls plain functions, and builds its proto
before the session closes."""
