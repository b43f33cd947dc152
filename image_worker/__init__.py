"""image_worker: turns pending uploads into completed images (being built; see the README)."""
