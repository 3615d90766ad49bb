"""The networks of deepcovid-node: architectures, model cards and the registry, preprocessing,
inference and occlusion heatmaps. Knows nothing of DICOM networking or Celery (see
``docs/architecture.md``); the only DICOM it touches is turning a dataset's pixels into an array.
"""
