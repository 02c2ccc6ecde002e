"""Model repositories: where model manifests and artifacts are stored."""
