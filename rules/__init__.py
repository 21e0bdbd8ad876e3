"""mllint's rules: one module per rule, discovered by ``mllint.registry``."""
