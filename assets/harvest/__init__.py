"""The harvest's plain modules: manifests -> files -> catalog (`run_manifest`, `sound_files`,
`sound_catalog`)."""
