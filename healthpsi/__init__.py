"""healthpsi command line: one thin module per command group over the project's packages."""
