"""Training stage: `pct train` (DDP-ready loop, losses, cached-teacher join)."""
