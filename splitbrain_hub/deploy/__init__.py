"""The model in and out of other formats and runtimes.

- ``export.py``  ONNX graphs, ``torch.export`` programs, and a static folder that colorizes in the browser
                 (its page is ``webapp/``)
- ``caffe.py``   the authors' Caffe ``.caffemodel`` -> a ``save_pretrained`` folder (a reader of a foreign
                 format: defensive, size-limited)

Imports ``prediction``, ``models``, ``hub``, ``ops``, ``files`` and ``errors``. The HTTP service is its own
subpackage, ``splitbrain_hub.serve``.
"""
from .caffe import convert_caffe, read_caffemodel
from .export import DEFAULT_OPSET, GRAPHS, PHOTO_GRAPHS, WEB_GRAPHS, export_onnx, export_programs, export_web

__all__ = ['DEFAULT_OPSET', 'GRAPHS', 'PHOTO_GRAPHS', 'WEB_GRAPHS', 'convert_caffe', 'export_onnx',
           'export_programs', 'export_web', 'read_caffemodel']
