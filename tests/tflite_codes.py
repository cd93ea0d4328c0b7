"""Every activation code of a ``.tflite`` as model outputs, one image at a time: what the
TFLite target tests compare code for code against the NumPy reference."""

from __future__ import annotations

import numpy as np

from climbq_deploy.ir.graph import Graph, ThresholdAct
from climbq_deploy.kernels import ops
from climbq_deploy.targets.tflite import RESOLVERS


def codes_as_outputs(
    content: bytes, graph: Graph, x: np.ndarray, kernels: str, also: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Every code of the model (a code the fused op rectified under its ReLU's name), and the
    outputs of the ops named in ``also`` (e.g. ``("max_pool", "concat")``), made model outputs
    and read image by image: LiteRT's interpreter with the given kernels (XNNPACK really
    delegated: no tensor-preserving debug mode, which turns the delegate off) or the fused
    route. int64, after checking each value is an integer."""
    from climbq_deploy.targets.tflite.custom_op import uses_custom_op
    from climbq_deploy.targets.tflite.forms import rectifier
    from climbq_deploy.targets.tflite.fused_runner import FusedRunner, tensor_names, with_outputs

    present = set(tensor_names(content))
    names = [n.output for n in graph.nodes if n.op in also]
    for node in graph.nodes:
        if isinstance(node, ThresholdAct):
            relu = rectifier(graph, node.output)
            names.append(node.output if node.output in present or relu is None else relu.output)
    model = with_outputs(content, names)
    step = graph.nodes[0]
    quantized = ops.input_quant(x, step.mean, step.std, step.step)

    def feed(i: int, dtype: np.dtype) -> np.ndarray:
        """Image ``i`` as the model reads it: the uint8 image itself (the default input
        contract), else the host-quantized ``I`` (a file of the int32 input form)."""
        source = x if np.dtype(dtype) == np.uint8 else quantized
        return source[i : i + 1].astype(dtype)

    got: dict[str, list[np.ndarray]] = {name: [] for name in names}
    if uses_custom_op(content):
        runner = FusedRunner(model, threads=1)
        for i in range(len(x)):
            outputs = runner.run(feed(i, runner.zero_input().dtype))
            for name, value in zip(names, outputs[1:], strict=True):
                got[name].append(value)
    else:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        it = Interpreter(
            model_content=model,
            experimental_op_resolver_type=getattr(OpResolverType, RESOLVERS[kernels]),
        )
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        outputs = {d["name"]: d["index"] for d in it.get_output_details()}
        for i in range(len(x)):
            it.set_tensor(detail["index"], feed(i, detail["dtype"]))
            it.invoke()
            for name in names:
                got[name].append(it.get_tensor(outputs[name]))
    joined = {name: np.concatenate(values) for name, values in got.items()}
    for name, value in joined.items():
        assert np.array_equal(value, np.rint(value)), f"{name} holds non-integers"
    return {name: value.astype(np.int64) for name, value in joined.items()}


def operator_names(content: bytes) -> list[str]:
    """The builtin (or custom) name of every operator of a ``.tflite`` file, in order."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        out.append(code.customCode.decode() if builtin == "CUSTOM" else builtin)
    return out
