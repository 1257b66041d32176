#!/usr/bin/env python3
"""A tiny ONNX model for `medlake model add` tests: Conv(1->4, 3^3) + Relu + MaxPool(2) +
GlobalAveragePool + Flatten on a [1, 1, 16, 32, 32] input, fixed seed.

Usage: python3 tests/oracle/tiny_onnx_model.py OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)
w = rng.normal(0, 0.3, (4, 1, 3, 3, 3)).astype(np.float32)
b = rng.normal(0, 0.1, 4).astype(np.float32)
nodes = [
    helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3, 3], pads=[1] * 6),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
    helper.make_node("GlobalAveragePool", ["p"], ["g"]),
    helper.make_node("Flatten", ["g"], ["features"]),
]
graph = helper.make_graph(
    nodes,
    "tiny",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 32, 32])],
    [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4, 8, 16, 16]),
    ],
    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
