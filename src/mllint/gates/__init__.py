"""Second-stage prefilters: stdlib-only ast gates, one module per rule or rule family (see ``mllint.prefilter``)."""
