"""`capserve eval`: accuracy of the shipped capabilities on a labeled JSONL file."""
