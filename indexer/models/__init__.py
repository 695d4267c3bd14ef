"""Models: spec strings and capabilities, embedding, the offline towers, projection head,
preprocessing, ONNX exports."""
