"""Starting the retrain job from an alert: Kubernetes creates and runs it, hotserve only asks."""
