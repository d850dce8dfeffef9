"""One revision's passes: the scan (aliases, where parts start), the import, and the run in one process."""
