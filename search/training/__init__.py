"""Training projection heads and the fusion; the scripts that make the shipped files in data/."""
