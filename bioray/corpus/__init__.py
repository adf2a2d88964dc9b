"""Raw corpus formats -> document records (one dict per document)."""
