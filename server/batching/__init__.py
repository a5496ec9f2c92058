"""Gathering requests into windows and handing windows to the pipeline."""
