"""The second stage: exact re-scoring, querybank normalisation, the learned fusion."""
