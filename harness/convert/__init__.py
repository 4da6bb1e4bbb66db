"""Pure model-variant converters (tensorflow-free): path in, path out, a dict of facts for the model pack.

onnx_variants     ONNX fp16 (onnxconverter-common) and int8 QDQ (onnxruntime), outlier search for mixed precision
tflite_variants   TFLite fp16 / int8 (ai-edge-quantizer)
tflite_signature  add a SignatureDef to a .tflite that has none (ai-edge-quantizer needs one)
tflite_to_onnx    TFLite -> ONNX (tflite2onnx)

Submodules are imported on use, not here: each pulls in a heavy runtime.
"""
