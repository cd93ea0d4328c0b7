"""The TFLite target: integer CNNs written as .tflite flatbuffers and run with LiteRT."""
