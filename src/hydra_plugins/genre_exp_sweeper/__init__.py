"""genre-exp's Hydra plugins: found by Hydra through the hydra_plugins namespace."""
