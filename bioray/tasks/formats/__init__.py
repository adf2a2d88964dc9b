"""Dataset file formats: each module reads one format into bioray.tasks.examples objects; the registry
(bioray.tasks.registry.FORMATS) names them."""
