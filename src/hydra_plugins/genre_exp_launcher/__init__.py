"""genre-exp's Hydra launcher plugin: found by Hydra through the hydra_plugins namespace."""
