"""xmodal's command line: parses, calls indexer/search, prints."""
