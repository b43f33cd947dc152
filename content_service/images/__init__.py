"""The image room: image records and their variants (records), job leases fenced by a token
(leases), the content-addressed media store (media), and what the image servicers of one
server share, with its start-up sweep (runtime). docs/images.md describes the lifecycle."""
