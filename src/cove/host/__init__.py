"""Host helpers every layer above uses: the home and its paths, processes, files,
namespaces, journals."""
