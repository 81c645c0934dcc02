"""The one-to-one table between the original layer names and this package's state-dict keys.

Original names are the TF re-implementation's variables (``layer/param``); Caffe uses the same
layer names (plus ``scale*`` layers for BN's gamma/beta), see docs/original.md §3.

=================================  ==========================================
original                           state-dict key
=================================  ==========================================
``conv1/weights``                  ``backbone.conv1.weight``
``bn_conv1/gamma``                 ``backbone.bn_conv1.weight``
``res4b22_branch2b/weights``       ``backbone.res4b22.branch2b.weight``
``bn4b22_branch2b/beta``           ``backbone.res4b22.bn_branch2b.bias``
``bn4b22_branch2b/moving_mean``    ``backbone.res4b22.bn_branch2b.running_mean``
``bn4b22_branch2b/moving_variance````backbone.res4b22.bn_branch2b.running_var``
``fc1_voc12_c0/weights``           ``classifier.fc1_voc12_c0.weight``
``fc1_voc12_c0/biases``            ``classifier.fc1_voc12_c0.bias``
=================================  ==========================================
"""

from __future__ import annotations

import re

CONV_PARAMS = {"weights": "weight", "biases": "bias"}
BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_CONV_BY_KEY = {v: k for k, v in CONV_PARAMS.items()}
_BN_BY_KEY = {v: k for k, v in BN_PARAMS.items()}

_BN_LAYER = re.compile(r"^bn(\d[a-z]\d*)_(branch\w+)$")  # bn4b22_branch2b
_CONV_LAYER = re.compile(r"^(res\d[a-z]\d*)_(branch\w+)$")  # res4b22_branch2b


def _is_bn(module: str) -> bool:
    """BN modules are the ones named ``bn*`` (``bn_conv1``, ``bn_branch2b``)."""
    return module.rsplit(".", 1)[-1].startswith("bn")


def original_layer_to_module(layer: str) -> str:
    """``res4b22_branch2b`` → ``backbone.res4b22.branch2b``; ``bn4b22_branch2b`` → ``...bn_branch2b``."""
    if layer in ("conv1", "bn_conv1"):
        return f"backbone.{layer}"
    if layer.startswith("fc1_"):
        return f"classifier.{layer}"
    if m := _CONV_LAYER.match(layer):
        return f"backbone.{m.group(1)}.{m.group(2)}"
    if m := _BN_LAYER.match(layer):
        return f"backbone.res{m.group(1)}.bn_{m.group(2)}"
    raise KeyError(f"not a DeepLab-ResNet layer name: {layer!r}")


def original_to_state_key(name: str) -> str:
    """A TF variable name (``layer/param``) → this package's state-dict key."""
    layer, _, param = name.partition("/")
    module = original_layer_to_module(layer)
    table = BN_PARAMS if _is_bn(module) else CONV_PARAMS
    if param not in table:
        raise KeyError(f"unexpected parameter {param!r} of layer {layer!r}")
    return f"{module}.{table[param]}"


def module_to_original_layer(module: str) -> str:
    """Inverse of :func:`original_layer_to_module`."""
    parts = module.split(".")
    if parts[0] == "classifier" or parts[1] in ("conv1", "bn_conv1"):
        return parts[1]
    block, leaf = parts[1], parts[2]
    if leaf.startswith("bn_"):
        return f"bn{block[3:]}_{leaf[3:]}"
    return f"{block}_{leaf}"


def state_key_to_original(key: str) -> str:
    """A state-dict key → the TF variable name (``layer/param``)."""
    module, _, attr = key.rpartition(".")
    param = (_BN_BY_KEY if _is_bn(module) else _CONV_BY_KEY)[attr]
    return f"{module_to_original_layer(module)}/{param}"
