"""`pct cache-fidelity`: how closely a compact teacher cache serves the distillation losses."""
