"""`pct analyze`: accuracy and negative-flip metrics of new models against an old one."""
