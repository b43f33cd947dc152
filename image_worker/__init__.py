"""image_worker: claims image jobs from content_service and turns each pending upload into a
completed image: web variants, metadata, optional alt text, caption and tags from a vision
model, and a search-index entry in vector_service (docs/worker.md)."""
