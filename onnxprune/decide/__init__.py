"""What to prune: importance criteria, the plan format, and schedules."""
