"""`pct precompute-teachers`: run the old model(s) once over fixed views, cache their outputs."""
