"""Export for serving (docs/export.md): `s2s-export` writes an ONNX bundle (onnx_export.py,
graphs.py, bundle.py) and `s2s-decode --backend onnxruntime` runs it (runtime.py);
s2s.decode.compare checks a bundle's steps against the PyTorch decoder. Only runtime.py and
onnx_export.py need the onnx extra. The manifest and its checks are s2s.artifact's."""
