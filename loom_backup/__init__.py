"""`python -m loom_backup`: backup, restore, verify and reconcile of a loom stack.

The command orchestrates; the services do the copying of what they own (content_service its
database and media, vector_service its LanceDB tables) through their backup RPCs, and the
command writes the manifest that ties both halves together. See docs/backup.md."""
