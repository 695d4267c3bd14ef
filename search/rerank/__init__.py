"""The second stage, out of the engine: `pipeline` runs QB-Norm (`qbnorm`), the learned fusion (`fusion`),
MMR and near-duplicate collapse (`stages`) over the first stage's candidates and their exact scores."""
