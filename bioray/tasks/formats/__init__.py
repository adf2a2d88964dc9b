"""Dataset file formats: each module reads one format into bioray.tasks.examples objects;
bioray.tasks.catalog.FORMATS names them."""
