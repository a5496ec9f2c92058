"""`capserve classify FILE`: a JSONL or CSV file through the server (or an in-process
runtime), its results appended to a JSONL file as they come, resumable.

rows.py reads the input, output.py resumes and writes the output, progress.py reports,
job.py runs the batches, classifiers.py and in_process.py answer them, command.py is the CLI.
"""
