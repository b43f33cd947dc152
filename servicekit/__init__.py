"""Pieces shared by our gRPC processes: server wiring, errors, auth metadata, logging."""
