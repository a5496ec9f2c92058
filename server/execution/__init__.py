"""Running a window: plan, execute, split results back, tell the observers."""
