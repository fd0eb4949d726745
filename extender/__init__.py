"""The Kubernetes world: a scheduler extender that runs the same profiles beside kube-scheduler."""
