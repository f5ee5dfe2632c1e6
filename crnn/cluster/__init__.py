"""What runs on a Kubernetes cluster: compile targets, training commands, training jobs (TFJob)."""
