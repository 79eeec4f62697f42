"""`pct evaluate`: a checkpoint's eval-view predictions, as a store for `pct analyze`."""
