"""Sources of the Python-backend models. The builder copies each folder's files, with the
`tritonyard_contract` package, into a model's version folder; models never import this package,
and neither do the clients (they decode images with `clients.lib.images`)."""
