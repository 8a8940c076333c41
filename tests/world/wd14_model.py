"""A tiny model with the WD14 tagger's ONNX signature, built here so no test downloads the real ~400 MB one.

SmilingWolf's v2 taggers take `input_1:0`, float32 NHWC [N, 448, 448, 3] (BGR, 0-255, padded white to a square) and
answer one sigmoid score per row of `selected_tags.csv`: 4 ratings, then the general and character tags in CSV order.
sd-scripts' tagger reads the input's name and its first dimension (`onnx.load`) and takes output 0. This model keeps
that signature and computes something cheap: the mean colour, a linear layer, a sigmoid.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jobs.sandbox.hub import WD14_TAGS_CSV

IMAGE_SIZE = 448
INPUT_NAME = "input_1:0"
OUTPUT_NAME = "predictions_sigmoid"


def tag_count(csv_bytes: bytes = WD14_TAGS_CSV) -> int:
    return len(list(csv.reader(io.StringIO(csv_bytes.decode())))) - 1


def tiny_wd14_onnx(csv_bytes: bytes = WD14_TAGS_CSV) -> bytes:
    tags = tag_count(csv_bytes)
    rng = np.random.default_rng(16)
    weights = numpy_helper.from_array(rng.normal(0, 0.01, (3, tags)).astype(np.float32), "weights")
    bias = numpy_helper.from_array(np.zeros(tags, dtype=np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME], ["colour"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["colour", "weights"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
        ],
        "wd14-tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", tags])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lorabot-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
