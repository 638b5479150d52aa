"""Sources of the Python-backend models. The builder copies each folder's files into a model's
version folder; models never import this package (the CLO client imports `image_decoder.frames`)."""
