"""Model building blocks: backbone (§4.2), SCM (§3.2), ICM (§3.3), heads and fusion baselines, registry."""
