"""Deployment tooling: Kubernetes manifests rendered with the user's values, and the monthly
batch job as Prefect flows. Nothing in the core or the modes imports this package."""
