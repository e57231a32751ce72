"""Reports: tables for the terminal, plots and HTML/Markdown for people."""
