"""The seed's TF-slim network, `resnet_v2_50(inputs, num_classes=10)`, on tf_slim.

What changed from the seed, and why (nothing that changes a number):

* `from tensorflow.contrib import slim` and `tensorflow.contrib.layers.python.layers.utils`
  are `tf_slim` and `tf_slim.layers.utils` (tf.contrib left TensorFlow 2; tf_slim is its
  continuation, with the same functions).
* TF1 names are spelled through `tf.compat.v1` (`variable_scope`), and `reduce_mean`'s
  `keep_dims` is `keepdims`.
* `resnet_v2_50` takes the block list: the seed runs one unit, `[(64, 64, 2)]`
  (seed/slim_resnet_v2_demo), and comments out the 50-layer list (seed/slim_resnet_v2_50).

Its quirks stay: BatchNorm (slim's bare `batch_norm`: epsilon 1e-3, beta but no gamma) only
as each unit's pre-activation and as the post-norm; every conv has a bias and no BatchNorm;
`conv2d_same` puts a ReLU on its explicit-padding path (the stem, and a strided 3x3) but not
on its stride-1 path (the arg_scope's `activation_fn=None`); a VALID 3x3/2 max-pool; the
`[1, 1]` max-pool shortcut of the raw input when the depth is unchanged; a kept-dims mean and
a 1x1 conv for the logits.

The seed runs BatchNorm as slim's default `is_training=True` (batch statistics); equiv calls
it, as any user of a trained network would, inside `slim.arg_scope([slim.batch_norm],
is_training=False)`, so the stored moving statistics are used (`build_taps`).
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tf_slim as slim
from tf_slim.layers import utils


class Block(collections.namedtuple('block', ['name', 'residual_unit', 'args'])):
    'A named tuple descrbing a RseNet Block'


def conv2d_same(inputs, num_outputs, kernel_size, stride, scope=None):
    if stride == 1:
        return slim.conv2d(inputs, num_outputs, kernel_size, stride=1, padding='SAME', scope=scope)
    else:
        pad_begin = (kernel_size - 1) // 2
        pad_end = kernel_size - 1 - pad_begin
        inputs = tf.pad(inputs, [[0, 0], [pad_begin, pad_end], [pad_begin, pad_end], [0, 0]])
        return slim.conv2d(inputs, num_outputs, kernel_size, stride=stride, padding='VALID',
                           normalizer_fn=None, activation_fn=tf.nn.relu, scope=scope)


@slim.add_arg_scope
def residual_unit(inputs, depth, depth_residual, stride, outputs_collections=None, scope=None):
    with tf.compat.v1.variable_scope(scope, 'residual_v2', [inputs]) as sc:
        depth_input = utils.last_dimension(inputs.get_shape(), min_rank=4)
        preactivate = slim.batch_norm(inputs, activation_fn=tf.nn.relu, scope='preactivate')
        if depth == depth_input:
            if stride == 1:
                identity = inputs
            else:
                identity = slim.max_pool2d(inputs, [1, 1], stride=stride, scope='shortcut')
        else:
            identity = slim.conv2d(preactivate, depth, [1, 1], stride=stride, normalizer_fn=None,
                                   activation_fn=None, scope='shortcut')
        residual = slim.conv2d(preactivate, depth_residual, [1, 1], stride=1, normalizer_fn=None,
                               activation_fn=tf.nn.relu, scope='conv1')
        residual = conv2d_same(residual, depth_residual, 3, stride=stride, scope='conv2')
        residual = slim.conv2d(residual, depth, [1, 1], stride=1, normalizer_fn=None, activation_fn=None,
                               scope='conv3')
        output = identity + residual
        output = utils.collect_named_outputs(outputs_collections, sc.name, output)
        return output


def resnet_v2(inputs, blocks, num_classes, reuse=None, scope=None):
    with tf.compat.v1.variable_scope(scope, 'resnet_v2', [inputs], reuse=reuse) as sc:
        end_points_collection = sc.original_name_scope + '_end_points'
        with slim.arg_scope([residual_unit], outputs_collections=end_points_collection):
            with slim.arg_scope([slim.conv2d], activation_fn=None, normalizer_fn=None):
                net = conv2d_same(inputs, num_outputs=64, kernel_size=7, stride=2, scope='conv1')
                net = slim.max_pool2d(net, [3, 3], stride=2, scope="pool1")
                for block in blocks:
                    with tf.compat.v1.variable_scope(block.name, 'block', [net]) as sc:
                        for i, tuple_value in enumerate(block.args):
                            with tf.compat.v1.variable_scope('unit_%d' % (i + 1), values=[net]):
                                depth, depth_bottleneck, stride = tuple_value
                                net = block.residual_unit(net, depth=depth, depth_residual=depth_bottleneck,
                                                          stride=stride)
                        net = utils.collect_named_outputs(end_points_collection, sc.name, net)
                net = slim.batch_norm(net, activation_fn=tf.nn.relu, scope='postnorm')
                net = tf.reduce_mean(net, [1, 2], name='pool5', keepdims=True)  # the seed: keep_dims
                if num_classes is not None:
                    net = slim.conv2d(net, num_classes, [1, 1], activation_fn=None, normalizer_fn=None,
                                      scope='logits')
        return net


DEMO_BLOCKS = [Block('block1', residual_unit, [(64, 64, 2)])]
BLOCKS_50 = [Block('block1', residual_unit, [(256, 64, 1), (256, 64, 1), (256, 64, 2)]),
             Block('block2', residual_unit, [(512, 128, 1)] * 3 + [(512, 128, 2)]),
             Block('block3', residual_unit, [(1024, 256, 1)] * 5 + [(1024, 256, 2)]),
             Block('block4', residual_unit, [(2048, 512, 1)] * 3)]


def resnet_v2_50(inputs, num_classes=None, global_pool=True, reuse=None, scope='resnet_v2_6', blocks=None):
    blocks = DEMO_BLOCKS if blocks is None else blocks  # the seed: the demo list, the 50 commented out
    return resnet_v2(inputs, blocks, num_classes, reuse=reuse, scope=scope)


def blocks_of(variant) -> list[Block]:
    """The seed's block list that `variant` describes."""
    return DEMO_BLOCKS if variant.name == "seed/slim_resnet_v2_demo" else BLOCKS_50


def build_taps(variant, x) -> dict:
    """Build the seed's network on `x` in the current graph (BatchNorm in inference mode), and
    find every canonical tap in it by op name."""
    from equiv.families.resnet import plan

    with slim.arg_scope([slim.batch_norm], is_training=False):
        resnet_v2_50(x, num_classes=variant.num_classes, blocks=blocks_of(variant))
    g = tf.compat.v1.get_default_graph()

    def output(scope):  # a slim layer's last op: its ReLU where it has one
        for op in ("Relu", "BiasAdd"):
            try:
                return g.get_tensor_by_name(f"{scope}/{op}:0")
            except KeyError:
                pass
        raise KeyError(f"no output op under {scope}")

    top = "resnet_v2_6"
    taps = {"stem/conv": output(f"{top}/conv1"), "stem/pool": g.get_tensor_by_name(f"{top}/pool1/MaxPool:0")}
    for unit in plan.units(variant):
        scope = f"{top}/block{unit.stage}/unit_{unit.index}/residual_v2"
        taps[f"{unit.name}/preact"] = output(f"{scope}/preactivate")
        add = g.get_operation_by_name(f"{scope}/add")  # identity + residual
        taps[f"{unit.name}/shortcut"] = add.inputs[0]
        for k, c in enumerate(unit.convs, start=1):
            taps[c.name] = output(f"{scope}/conv{k}")
        taps[unit.name] = add.outputs[0]
    taps["post"] = output(f"{top}/postnorm")
    taps["pool"] = g.get_tensor_by_name(f"{top}/pool5:0")
    taps["logits"] = output(f"{top}/logits")
    return taps
