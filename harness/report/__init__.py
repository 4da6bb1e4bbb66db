"""Console tables, HTML/Markdown/CSV reports, run comparison and the CI gate (all read run directories)."""
