"""Command-line tools for operating the pipeline: `python -m ops --help`.

`replay` republishes dead letters to the events topic, `export` writes them to
a file without acknowledging them, and `publish` sends a file of events to the
events topic.
"""
